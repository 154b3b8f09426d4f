"""The media rows of the benchmark (issue 13 "Performance"), run by bench/run.sh against
each server in turn with the same parameters:

- upload and download throughput of files of each --sizes (MB), streamed from and to disk,
  beside a plain copy of the same file on the same disk (the reference: "within 2x");
- thumbnail generation of a 12-megapixel JPEG: both servers run with `dynamic_thumbnails`
  on, and every request asks for a size not asked before, so each one makes a thumbnail
  (like with like: the on-demand path on both);
- the server's peak RSS while it receives a --big-mb upload, from sampling VmRSS in
  /proc/<pid>/status every 20 ms (and VmHWM, the process's lifetime peak, after it).

Usage: python media.py configure HOMESERVER_YAML          (before the server starts)
       python media.py run --url URL --pid PID --label L --out FILE [--quick]
"""
import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

import requests
import yaml

MB = 1024 * 1024


def configure(path):
    """The media settings both servers run with."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    # Beside the configuration, as Synapse's generated configuration has it (Myelin's
    # generate-config leaves it to the default, relative to the working directory).
    cfg.setdefault("media_store_path", os.path.join(os.path.dirname(os.path.abspath(path)), "media_store"))
    cfg["max_upload_size"] = "2G"
    cfg["dynamic_thumbnails"] = True
    cfg["enable_media_repo"] = True
    cfg["rc_media_create"] = {"per_second": 1_000_000, "burst_count": 10_000_000}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def register(url):
    """A new user (open registration, the dummy stage) and its access token."""
    body = {"username": "media" + uuid.uuid4().hex[:10], "password": "Bench-password-1!",
            "initial_device_display_name": "bench"}
    r = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=120)
    if r.status_code == 401:
        body["auth"] = {"type": "m.login.dummy", "session": r.json().get("session")}
        r = requests.post(f"{url}/_matrix/client/v3/register", json=body, timeout=120)
    r.raise_for_status()
    return r.json()["access_token"]


def make_file(directory, size):
    """A file of `size` bytes that does not compress."""
    path = os.path.join(directory, f"payload-{size}")
    with open(path, "wb") as f:
        left = size
        block = os.urandom(MB)
        while left > 0:
            f.write(block[: min(left, MB)])
            left -= MB
    return path


def upload_file(url, token, path, content_type="application/octet-stream"):
    with open(path, "rb") as f:
        r = requests.post(
            f"{url}/_matrix/media/v3/upload",
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type,
                     "Content-Length": str(os.path.getsize(path))},
            data=f, timeout=3600)
    r.raise_for_status()
    return r.json()["content_uri"]


def download(url, token, mxc, dest):
    server_name, media_id = mxc[len("mxc://"):].split("/", 1)
    with requests.get(f"{url}/_matrix/client/v1/media/download/{server_name}/{media_id}",
                      headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=3600) as r:
        r.raise_for_status()
        n = 0
        with open(dest, "wb") as f:
            for chunk in r.iter_content(chunk_size=MB):
                f.write(chunk)
                n += len(chunk)
    return n


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def throughput(url, token, directory, size_mb, reps):
    size = size_mb * MB
    path = make_file(directory, size)
    copies, uploads, downloads = [], [], []
    dest = os.path.join(directory, "dest")
    for _ in range(reps):
        seconds, _ = timed(lambda: shutil.copyfile(path, dest))
        copies.append(size / MB / seconds)
        os.remove(dest)
        seconds, mxc = timed(lambda: upload_file(url, token, path))
        uploads.append(size / MB / seconds)
        seconds, n = timed(lambda: download(url, token, mxc, dest))
        assert n == size, f"downloaded {n} of {size} bytes"
        downloads.append(size / MB / seconds)
        os.remove(dest)
    os.remove(path)
    return {
        "size_mb": size_mb,
        "reps": reps,
        "copy_mb_per_s": round(statistics.median(copies), 1),
        "upload_mb_per_s": round(statistics.median(uploads), 1),
        "download_mb_per_s": round(statistics.median(downloads), 1),
    }


def photo_jpeg(width=4000, height=3000):
    """A 12-megapixel JPEG with photo-like detail (a smooth gradient with noise)."""
    from PIL import Image
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    image = Image.merge("RGB", (gradient, noise, gradient.rotate(90).resize((width, height))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def thumbnails(url, token, directory, reps):
    path = os.path.join(directory, "photo.jpg")
    with open(path, "wb") as f:
        f.write(photo_jpeg())
    upload_seconds, mxc = timed(lambda: upload_file(url, token, path, "image/jpeg"))
    server_name, media_id = mxc[len("mxc://"):].split("/", 1)
    times = []
    for i in range(reps):
        # A size not asked before: made on this request.
        params = {"width": 320 + i, "height": 240 + i, "method": "scale"}
        seconds, r = timed(lambda: requests.get(
            f"{url}/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", params=params,
            headers={"Authorization": f"Bearer {token}"}, timeout=600))
        r.raise_for_status()
        times.append(seconds * 1000)
    os.remove(path)
    return {
        "megapixels": 12,
        "reps": reps,
        "upload_with_thumbnail_sizes_s": round(upload_seconds, 2),
        "ms_median": round(statistics.median(times), 1),
        "ms_min": round(min(times), 1),
    }


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_during_upload(url, token, pid, directory, size_mb):
    path = make_file(directory, size_mb * MB)
    before = status_kib(pid, "VmRSS")
    peak = [before or 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = status_kib(pid, "VmRSS")
            if rss is not None:
                peak[0] = max(peak[0], rss)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds, _ = timed(lambda: upload_file(url, token, path))
    done.set()
    sampler.join()
    os.remove(path)
    return {
        "size_mb": size_mb,
        "upload_s": round(seconds, 1),
        "rss_before_mib": round((before or 0) / 1024, 1),
        "rss_peak_mib": round(peak[0] / 1024, 1),
        "hwm_after_mib": round((status_kib(pid, "VmHWM") or 0) / 1024, 1),
    }


def run(a):
    sizes = [1, 20] if a.quick else [1, 100]
    reps = 2 if a.quick else 5
    thumb_reps = 3 if a.quick else 10
    big = 256 if a.quick else 1024
    token = register(a.url)
    result = {"label": a.label, "quick": a.quick, "throughput": [], "thumbnail": None, "rss": None}
    directory = tempfile.mkdtemp(prefix="media-bench-", dir=a.workdir)
    try:
        for size in sizes:
            print(f"  {a.label}: {size} MB up/down", file=sys.stderr)
            result["throughput"].append(throughput(a.url, token, directory, size, reps))
        print(f"  {a.label}: 12-megapixel thumbnails", file=sys.stderr)
        result["thumbnail"] = thumbnails(a.url, token, directory, thumb_reps)
        print(f"  {a.label}: RSS during a {big} MB upload", file=sys.stderr)
        result["rss"] = rss_during_upload(a.url, token, a.pid, directory, big)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("configure")
    c.add_argument("path")
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--workdir", help="where the payload files go (the disk the copy reference measures)")
    a = ap.parse_args()
    if a.command == "configure":
        configure(a.path)
    else:
        run(a)


if __name__ == "__main__":
    main()
