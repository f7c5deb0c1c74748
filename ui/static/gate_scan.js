// Venueflow gate page: scan QR codes with the device camera using the bundled jsQR.
// getUserMedia → <video> → canvas (downscaled) → jsQR every 150 ms → emitEvent(name, text).
// A code is reported once while it stays in view; again only after it was gone for 2 s
// (a ticket held in front of the camera is one scan, not one every few seconds).
// Camera access needs HTTPS (or localhost) on tablets; failures are reported as `<name>_error`.
window.vfScanner = (function () {
  let stream = null;
  let timer = null;
  let last = null;
  let lastSeenAt = 0;

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
  }

  async function start(videoElementId, eventName) {
    stop();
    const video = getHtmlElement(videoElementId);
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error("this browser offers no camera here (the page needs HTTPS)");
      }
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "environment" },
        audio: false,
      });
    } catch (err) {
      emitEvent(eventName + "_error", String((err && err.message) || err));
      return;
    }
    video.srcObject = stream;
    video.setAttribute("playsinline", "true");
    video.muted = true;
    try {
      await video.play();
    } catch (err) {
      /* autoplay may need the click that started us; frames still arrive */
    }
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    timer = setInterval(function () {
      if (!stream || video.readyState < 2) return;
      const w = video.videoWidth;
      const h = video.videoHeight;
      if (!w || !h) return;
      const scale = Math.min(1, 800 / Math.max(w, h));
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(h * scale);
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
      const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const code = jsQR(img.data, img.width, img.height, { inversionAttempts: "dontInvert" });
      if (!code || !code.data) return;
      const now = Date.now();
      const again = code.data === last && now - lastSeenAt < 2000;
      last = code.data;
      lastSeenAt = now;
      if (!again) emitEvent(eventName, code.data);
    }, 150);
  }

  return { start: start, stop: stop };
})();
