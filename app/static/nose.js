// The /nose page: a photo (chosen or dropped) -> POST /image-bin -> every face drawn on a
// canvas, with the JSON; and a live mode that sends camera frames one at a time and draws
// the nose of each face.  No build step, no inline script (the page's CSP forbids it).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const COLOURS = { box: "#3cdc50", nose: "#ff2828", left_eye: "#28a0ff", right_eye: "#28a0ff",
                    mouth_left: "#e63ce6", mouth_right: "#e63ce6" };

  function headers() {
    const key = $("api-key");
    return key && key.value.trim() ? { "X-API-Key": key.value.trim() } : {};
  }

  async function postImage(blob, name, fields) {
    const fd = new FormData();
    fd.append("image", blob, name);
    for (const [k, v] of Object.entries(fields)) fd.append(k, v);
    const r = await fetch("/image-bin", { method: "POST", body: fd, headers: headers() });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const msg = body && body.error ? (body.error.message || body.error) : r.status + " " + r.statusText;
      throw new Error(String(msg));
    }
    return body;
  }

  function drawFaces(ctx, result, sx, sy, onlyNose) {
    const t = Math.max(1, Math.round(ctx.canvas.width / 320));
    ctx.lineWidth = t;
    for (const f of result.faces) {
      if (!onlyNose) {
        ctx.strokeStyle = COLOURS.box;
        ctx.strokeRect(f.box.x * sx, f.box.y * sy, f.box.width * sx, f.box.height * sy);
      }
      const r = Math.max(2, Math.min(f.box.width * sx, f.box.height * sy) / 25);
      for (const [name, p] of Object.entries(f.landmarks)) {
        if (onlyNose && name !== "nose") continue;
        ctx.fillStyle = COLOURS[name];
        ctx.beginPath();
        ctx.arc(p[0] * sx, p[1] * sy, name === "nose" ? r * 1.4 : r, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (!result.faces.length) {  // the legacy whole-image point
      ctx.strokeStyle = COLOURS.nose;
      ctx.beginPath();
      ctx.arc(result.x_px * sx, result.y_px * sy, 6 * t, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  function describe(result) {
    const n = result.faces.length;
    if (!n) return "No face found (the ring marks the whole-image estimate).";
    return n + (n === 1 ? " face found." : " faces found, largest first.");
  }

  // --- a photo ------------------------------------------------------------------------
  async function analyse(file) {
    const status = $("nose-status");
    status.textContent = "Sending " + file.name + "...";
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (e) {
      status.textContent = "This browser cannot show that file; sending it anyway.";
    }
    const fields = { max_faces: $("max-faces").value, min_score: $("min-score").value };
    let result;
    try {
      result = await postImage(file, file.name, fields);
    } catch (e) {
      status.textContent = "Error: " + e.message;
      return;
    }
    const canvas = $("nose-canvas");
    $("nose-figure").hidden = false;
    const ctx = canvas.getContext("2d");
    const scale = Math.min(1, 960 / Math.max(result.width, result.height));
    canvas.width = Math.max(1, Math.round(result.width * scale));
    canvas.height = Math.max(1, Math.round(result.height * scale));
    if (bitmap) ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    drawFaces(ctx, result, canvas.width / result.width, canvas.height / result.height, false);
    const list = $("nose-faces");
    list.replaceChildren();
    result.faces.forEach((f) => {
      const li = document.createElement("li");
      li.textContent = "box " + Math.round(f.box.x) + "," + Math.round(f.box.y) + " " + Math.round(f.box.width) +
        "x" + Math.round(f.box.height) + ", score " + f.score.toFixed(2) + ", nose " +
        f.landmarks.nose.map((v) => v.toFixed(1)).join(", ");
      list.appendChild(li);
    });
    $("nose-json").textContent = JSON.stringify(result, null, 2);
    $("nose-caption").textContent = result.width + "x" + result.height + " px; " + describe(result);
    canvas.setAttribute("aria-label", "The photo, " + describe(result));
    status.textContent = describe(result);
    document.body.dataset.noseResult = String(result.faces.length);
  }

  function setupPhoto() {
    const form = $("nose-form");
    const input = $("nose-file");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (input.files && input.files[0]) analyse(input.files[0]);
      else $("nose-status").textContent = "Choose a photo first.";
    });
    input.addEventListener("change", () => { if (input.files && input.files[0]) analyse(input.files[0]); });
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("dragging"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("dragging");
      const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
      if (f) analyse(f);
    });
  }

  // --- the camera -----------------------------------------------------------------------
  let stream = null;
  let running = false;
  const times = [];

  async function loop() {
    const video = $("cam-video");
    const canvas = $("cam-canvas");
    const ctx = canvas.getContext("2d");
    const grab = document.createElement("canvas");
    let frames = 0;
    while (running) {
      if (!video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
      grab.width = video.videoWidth;
      grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
      const t0 = performance.now();
      let result;
      try {
        result = await postImage(blob, "frame.jpg", { max_faces: "4" });
      } catch (e) {
        $("cam-status").textContent = "Error: " + e.message;
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      const t1 = performance.now();
      frames += 1;
      times.push(t1);
      while (times.length > 1 && t1 - times[0] > 3000) times.shift();
      canvas.width = grab.width;
      canvas.height = grab.height;
      ctx.drawImage(grab, 0, 0);
      drawFaces(ctx, result, 1, 1, true);
      const fps = times.length > 1 ? (times.length - 1) / ((t1 - times[0]) / 1000) : 0;
      $("cam-fps").textContent = fps.toFixed(1);
      $("cam-latency").textContent = Math.round(t1 - t0);
      $("cam-frames").textContent = String(frames);
      const f = result.faces[0];
      $("cam-nose").textContent = f ? f.landmarks.nose.map((v) => Math.round(v)).join(", ") : "no face";
      document.body.dataset.camFrames = String(frames);
      document.body.dataset.camNose = f ? f.landmarks.nose.join(",") : "";
    }
  }

  async function startCamera() {
    const status = $("cam-status");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "This browser offers no camera here (a camera needs https or localhost).";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      status.textContent = "No camera: " + e.message;
      return;
    }
    const video = $("cam-video");
    video.srcObject = stream;
    await video.play();
    running = true;
    $("cam-start").disabled = true;
    $("cam-stop").disabled = false;
    $("cam-stop").focus();
    status.textContent = "Camera on.";
    loop();
  }

  function stopCamera() {
    running = false;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    $("cam-start").disabled = false;
    $("cam-stop").disabled = true;
    $("cam-start").focus();
    $("cam-status").textContent = "Camera off.";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("annotate-field").remove();  // the no-JavaScript form asks for the drawn picture; we draw ourselves
    setupPhoto();
    $("cam-start").addEventListener("click", startCamera);
    $("cam-stop").addEventListener("click", stopCamera);
  });
})();
