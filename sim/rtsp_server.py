"""A real RTSP test camera on loopback: GStreamer's RTSP server, run by Debian's Python.

    /usr/bin/python3 sim/rtsp_server.py --port 8554 --mount test [--mount cam2] [--fps 15]

Why this way: python3-gi (GStreamer's bindings) is built for `/usr/bin/python3` only, so this
script imports nothing from the project's venv — only `sim/camera_pattern.py` (numpy). Each
mount is one shared media (`set_shared(True)`): one painter and one H.264 encoder serve every
client of that mount, like a real camera; `--per-client` gives each client a pipeline of its
own instead. The video tests use that: in a fresh-clone CI run (2026-12-05) the shared media of
a restarted test camera took frames in but sent no RTP for 30 s and more to any of its three
readers (this script's own log: "media plays, frames go in, no RTP out"), while each reader's
reconnect rejoined the same stuck pipeline; with a pipeline per client a reconnect gets a fresh
one, as a reader of a real camera would after the camera recovered. Cause of the stall not found.
Frames are painted by `camera_pattern.Painter` (a
moving ball, a clock, and the send time written into pixels so readers can measure latency)
and pushed through `appsrc`; Debian's GStreamer lacks the pango text overlays.

Install (Debian 12): `apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly python3-numpy`.
`--check` exits 0 when all of that is importable (run.py uses it to decide whether `demo`
gets a test camera). Prints `READY rtsp://...` per mount once it listens; exits 2 if the port
is taken. SIGINT/SIGTERM stop it cleanly. On stderr it logs, with the time, each client
(connected, PLAY, TEARDOWN, closed) and each media (configured, unprepared), and says when it
is CPU-starved or its media stops sending: the video tests print that log when a camera fails,
so a failure shows what the camera did.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REQUIRED_ELEMENTS = ("appsrc", "videoconvert", "x264enc", "rtph264pay")


def say(msg: str) -> None:
    """One line on stderr with the wall time (the tests show this log when a camera fails)."""
    t = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    print(f"{stamp} rtsp_server: {msg}", file=sys.stderr, flush=True)


def _gst():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    missing = [e for e in REQUIRED_ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        raise ImportError(f"GStreamer elements missing: {', '.join(missing)}")
    return GLib, Gst, GstRtspServer


class _Feeder:
    """Pushes painted frames into one media's appsrc at the mount's frame rate, and asks the
    encoder for a keyframe every `keyframe_s` of wall time.

    Why by time: a new reader decodes nothing before the next keyframe, and a GOP counted in
    frames (`key-int-max` alone) stretches when this process is CPU-starved — under load it
    pushed 7-9 fps of 15 (load average ~20), 1.2-1.8 fps when also niced. Measured with fresh
    readers using the tests' 2 s open/read timeouts on a shared mount, server at `nice -n 19`
    (/tmp script, 10 readers each): GOP in frames, 6 of 10 first reads failed (no keyframe
    within 2 s); keyframe each second, 0 of 10 failed, first frame 0.02 s after the open. The
    video flow ends a stream after 3 failed reads and reopens, and waits for a keyframe again:
    that matches the CI failure ("not streaming after 30s", "read failed"), seen here once
    under load as 12 reopens in 50 s without a frame while the test camera kept its media
    playing. A real camera's GOP is a fixed time because its frame rate is fixed.

    It also says (on stderr, which the video tests print when a camera fails) when this process
    is CPU-starved (pushes below 80 % of the frame rate over 10 s) and when the media plays but
    its payloader has sent nothing for 3 s although frames go in, so a failed test shows
    whether the test camera itself stalled."""

    def __init__(self, Gst, appsrc, encoder, payloader, painter, fps: float, keyframe_s: float):
        self.Gst, self.appsrc, self.pay, self.painter = Gst, appsrc, payloader, painter
        self.fps, self.keyframe_s = fps, keyframe_s
        self.encoder_src = encoder.get_static_pad("src")
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from gi.repository import GstVideo

        Gst = self.Gst
        interval = 1.0 / self.fps
        next_t = window_t = check_t = next_key = time.monotonic()
        pushed, seqnum, seqnum_since = 0, None, check_t
        while self.running:
            frame = self.painter.paint()
            buf = Gst.Buffer.new_wrapped(frame.tobytes())
            ret = self.appsrc.emit("push-buffer", buf)
            if ret != Gst.FlowReturn.OK:
                say(f"feeder {id(self):x}: push-buffer returned {ret.value_nick}; feeder ends")
                break  # media shut down (last client left): a new media gets a new feeder
            pushed += 1
            now = time.monotonic()
            if now >= next_key:
                self.encoder_src.send_event(
                    GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
                )
                next_key = now + self.keyframe_s
            if now - window_t >= 10:
                rate = pushed / (now - window_t)
                if rate < 0.8 * self.fps:
                    say(f"feeder {id(self):x}: {rate:.1f} fps of {self.fps:g} (CPU-starved)")
                pushed, window_t = 0, now
            if now - check_t >= 1:
                check_t = now
                playing = self.appsrc.get_state(0)[1] == Gst.State.PLAYING
                seq = self.pay.get_property("stats").get_value("seqnum")
                if seq != seqnum or not playing:
                    seqnum, seqnum_since = seq, now
                elif now - seqnum_since >= 3:
                    say(
                        f"feeder {id(self):x}: media plays, frames go in, no RTP out for "
                        f"{now - seqnum_since:.0f}s"
                    )
            next_t += interval
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst to catch up


def _factory(Gst, GstRtspServer, mount_index: int, args: argparse.Namespace):
    from camera_pattern import Painter

    w, h, fps = args.width, args.height, args.fps
    # Only a cap: the feeder asks for a keyframe every `keyframe_s` of wall time (see _Feeder).
    gop = max(1, round(fps * args.keyframe_s * 4))
    launch = (
        "( appsrc name=src is-live=true format=time do-timestamp=true "
        f'caps="video/x-raw,format=BGR,width={w},height={h},framerate={round(fps)}/1" '
        "! queue max-size-buffers=2 leaky=downstream ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
        f"bitrate={args.bitrate} threads=1 "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    # Shared (the default): one pipeline, one encoder for every client of this mount.
    factory.set_shared(not args.per_client)
    feeders: list[_Feeder] = []

    def configure(_factory, media) -> None:
        pipeline = media.get_element()
        appsrc, pay = pipeline.get_child_by_name("src"), pipeline.get_child_by_name("pay0")
        enc, painter = pipeline.get_child_by_name("enc"), Painter(w, h, fps, mount_index)
        feeder = _Feeder(Gst, appsrc, enc, pay, painter, fps, args.keyframe_s)
        feeders.append(feeder)
        say(f"media {id(media):x} configured, feeder {id(feeder):x} started")

        def unprepared(_media) -> None:
            say(f"media {id(media):x} unprepared, feeder {id(feeder):x} stopped")
            feeder.running = False

        media.connect("unprepared", unprepared)

    factory.connect("media-configure", configure)
    return factory


def serve(args: argparse.Namespace) -> int:
    GLib, Gst, GstRtspServer = _gst()
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for i, mount in enumerate(args.mount or ["test"]):
        mounts.add_factory("/" + mount.strip("/"), _factory(Gst, GstRtspServer, i, args))

    def client_connected(_server, client) -> None:
        sock = client.get_connection().get_read_socket()
        who = f"client :{sock.get_remote_address().get_port()}"
        say(f"{who} connected")
        client.connect("closed", lambda _c: say(f"{who} closed"))
        for req in ("play-request", "teardown-request"):
            client.connect(req, lambda _c, _ctx, req=req: say(f"{who} {req.split('-')[0].upper()}"))

    server.connect("client-connected", client_connected)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port} (port in use?)", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()

    def stop(*_: object) -> bool:
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    for mount in args.mount or ["test"]:
        print(f"READY rtsp://{args.host}:{args.port}/{mount.strip('/')}", flush=True)
    loop.run()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--mount", action="append", help="mount path (repeatable); default: test")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--bitrate", type=int, default=1500, help="H.264 kbit/s")
    p.add_argument(
        "--keyframe-s", type=float, default=1.0, help="seconds between keyframes (wall time)"
    )
    p.add_argument(
        "--per-client",
        action="store_true",
        help="a pipeline of its own for each client (the tests': see the module docstring)",
    )
    p.add_argument("--check", action="store_true", help="exit 0 if GStreamer is usable")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        try:
            _gst()
            import camera_pattern  # noqa: F401 - numpy must import under this Python too
        except (ImportError, ValueError) as exc:
            print(f"GStreamer RTSP server unavailable: {exc}", file=sys.stderr)
            return 1
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
