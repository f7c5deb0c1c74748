// Venueflow live video player (served by the dashboard at /video/player.js; no CDN).
//
// Every <img data-vf-camera="ID"> on the page gets one WebSocket to /video/ws/ID. Each binary
// message is a 32-byte header (magic "VFJ1", seq u64, captured_at f64, encoded_at f64,
// width u16, height u16; big-endian) followed by a JPEG. The JPEG is shown through a blob URL,
// and after each frame is shown (or skipped) the player sends an ack, so the server never has
// more than two frames in flight to us: a slow browser shows the newest frame and skips the
// rest instead of queueing them. Images added later (NiceGUI renders with Vue) are found by a
// MutationObserver; removed ones close their socket.
//
// For tests and benchmarks each <img> carries data-vf-seq / data-vf-frames / data-vf-state, and
// window.vfVideoStats() returns frames and capture→shown latencies (ms) per camera.
(() => {
  if (window.vfVideoStats) return;
  const HEADER = 32;
  const players = new Map();
  const stats = {};

  class Player {
    constructor(img) {
      this.img = img;
      this.cam = img.dataset.vfCamera;
      this.url = null;
      this.pending = null;
      this.busy = false;
      this.closed = false;
      this.delay = 500;
      this.s = stats[this.cam] = stats[this.cam] || { frames: 0, latencies: [] };
      this.open();
    }

    open() {
      const proto = location.protocol === 'https:' ? 'wss' : 'ws';
      const ws = new WebSocket(`${proto}://${location.host}/video/ws/${encodeURIComponent(this.cam)}`);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => { this.delay = 500; this.img.dataset.vfState = 'open'; };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        this.img.dataset.vfState = ev.code === 4404 ? 'unknown camera' : 'closed';
        if (!this.closed && ev.code !== 4404) {
          this.retry = setTimeout(() => this.open(), this.delay);
          this.delay = Math.min(this.delay * 2, 5000);
        }
      };
      this.ws = ws;
    }

    ack() {
      if (this.ws.readyState === 1) this.ws.send('a');
    }

    receive(buf) {
      if (!(buf instanceof ArrayBuffer) || buf.byteLength <= HEADER) { this.ack(); return; }
      if (this.busy) {
        if (this.pending) this.ack(); // the older pending frame is skipped
        this.pending = buf;
        return;
      }
      this.show(buf);
    }

    show(buf) {
      this.busy = true;
      const dv = new DataView(buf);
      const seq = Number(dv.getBigUint64(4));
      const captured = dv.getFloat64(12);
      const url = URL.createObjectURL(new Blob([new Uint8Array(buf, HEADER)], { type: 'image/jpeg' }));
      const img = this.img;
      const done = (ok) => {
        if (ok) {
          if (this.url) URL.revokeObjectURL(this.url);
          this.url = url;
          const s = this.s;
          s.frames += 1;
          s.latencies.push(Date.now() - captured * 1000);
          if (s.latencies.length > 2000) s.latencies.splice(0, 1000);
          img.dataset.vfSeq = String(seq);
          img.dataset.vfFrames = String(s.frames);
        } else {
          URL.revokeObjectURL(url);
        }
        this.ack();
        this.busy = false;
        if (this.pending && !this.closed) {
          const next = this.pending;
          this.pending = null;
          this.show(next);
        }
      };
      img.onload = () => done(true);
      img.onerror = () => done(false);
      img.src = url;
    }

    close() {
      this.closed = true;
      clearTimeout(this.retry);
      try { this.ws.close(); } catch (e) { /* already closed */ }
      if (this.url) URL.revokeObjectURL(this.url);
    }
  }

  function scan() {
    document.querySelectorAll('img[data-vf-camera]').forEach((img) => {
      const p = players.get(img);
      if (!p) players.set(img, new Player(img));
      else if (p.cam !== img.dataset.vfCamera) { p.close(); players.set(img, new Player(img)); }
    });
    for (const [img, p] of players) {
      if (!document.body.contains(img)) { p.close(); players.delete(img); }
    }
  }

  window.vfVideoStats = () => JSON.parse(JSON.stringify(stats));
  const start = () => {
    scan();
    new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
  };
  if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
})();
