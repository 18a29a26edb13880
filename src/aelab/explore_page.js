// aelab explore: the page's behaviour. Data: the JSON in #aelab-data (aelab.explore writes it).
// Arrays travel as base64 of little-endian float32 / int32; images as sprite sheets.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("aelab-data").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    Object.assign(e, attrs || {});
    if (text !== undefined) e.textContent = text;
    return e;
  };
  function bytes(b64) {
    const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u.buffer;
  }
  const f32 = (b) => new Float32Array(bytes(b));
  const i32 = (b) => new Int32Array(bytes(b));
  const [C, H, W] = D.shape;
  const ids = i32(D.ids), labels = i32(D.labels), nbrs = i32(D.neighbours), K = D.k;
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#636363"];
  const colour = (c) => PALETTE[c % PALETTE.length];
  const className = (c) => (D.classes[c] !== undefined ? D.classes[c] : String(c));
  const api = (window.aelab = { data: D, ready: false, walk: {}, denoise: {} });

  // ---------------------------------------------------------------- sprite sheets
  let pending = 0;
  function sheet(s) {
    const sh = { img: new Image(), cols: s.cols, ready: false };
    pending++;
    sh.img.onload = () => { sh.ready = true; if (--pending === 0) { refreshImages(); api.ready = true; } };
    sh.img.src = s.uri;
    return sh;
  }
  const images = sheet(D.images), recon = D.recon ? sheet(D.recon) : null;  // null: decoded here from the codes
  const dsheet = D.denoise.sheet ? sheet(D.denoise.sheet) : null;

  function paint(canvas, sh, k, scale) {  // tile k of a sheet onto a canvas, scaled up without smoothing
    canvas.width = W * scale; canvas.height = H * scale;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    if (sh.ready) ctx.drawImage(sh.img, (k % sh.cols) * W, Math.floor(k / sh.cols) * H, W, H, 0, 0, W * scale, H * scale);
    return canvas;
  }
  function figure(sh, k, scale, caption, cls) {
    const f = el("div", { className: "fig" + (cls ? " " + cls : "") });
    f.appendChild(paint(el("canvas", { className: "px" }), sh, k, scale));
    f.appendChild(el("div", {}, caption));
    return f;
  }
  function reconFigure(slot, scale) {
    if (recon) return figure(recon, slot, scale, "reconstruction");
    const f = el("div", { className: "fig" }), c = el("canvas", { className: "px" });
    putPixels(c, decode(codeOf(slot)), scale);
    f.append(c, el("div", {}, "reconstruction"));
    return f;
  }
  function putPixels(canvas, values, scale) {  // CHW values in [0, 1] -> the canvas
    const tmp = el("canvas"); tmp.width = W; tmp.height = H;
    const ctx = tmp.getContext("2d"), im = ctx.createImageData(W, H), n = W * H;
    for (let p = 0; p < n; p++) {
      for (let c = 0; c < 3; c++) {
        const v = values[(C === 1 ? 0 : c) * n + p];
        im.data[4 * p + c] = Math.round(Math.min(1, Math.max(0, v)) * 255);
      }
      im.data[4 * p + 3] = 255;
    }
    ctx.putImageData(im, 0, 0);
    canvas.width = W * scale; canvas.height = H * scale;
    const out = canvas.getContext("2d");
    out.imageSmoothingEnabled = false;
    out.drawImage(tmp, 0, 0, W * scale, H * scale);
  }

  // ---------------------------------------------------------------- header
  $("title").textContent = "aelab explore: " + D.title;
  $("summary").textContent = `Run ${D.run}: ${D.count.toLocaleString()} test images of ${C} x ${H} x ${W}, ` +
    `${D.classes.length} classes. Everything on this page is embedded; it needs no server and no network.`;
  for (const n of D.notes) $("notes").appendChild(el("li", {}, n));

  // ---------------------------------------------------------------- the map
  const S = D.map.size, P = D.map.pad, dpr = window.devicePixelRatio || 1;
  const canvas = $("map"), ctx = canvas.getContext("2d");
  canvas.width = S * dpr; canvas.height = S * dpr; canvas.style.width = S + "px"; canvas.style.height = S + "px";
  const maps = D.maps.map((m) => ({ key: m.key, label: m.label, pts: f32(m.points), slots: i32(m.slots), labels: i32(m.labels) }));
  const hidden = new Set();
  let cur = null, hover = -1, pins = [];

  function project(m) {  // the formula of aelab.explore's docstring
    const n = m.slots.length;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = m.pts[2 * i], y = m.pts[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const sx = x1 > x0 ? (S - 2 * P) / (x1 - x0) : Infinity, sy = y1 > y0 ? (S - 2 * P) / (y1 - y0) : Infinity;
    let s = Math.min(sx, sy); if (!isFinite(s)) s = 1;
    const xc = (x0 + x1) / 2, yc = (y0 + y1) / 2;
    m.px = new Float32Array(n); m.py = new Float32Array(n);
    for (let i = 0; i < n; i++) { m.px[i] = S / 2 + (m.pts[2 * i] - xc) * s; m.py[i] = S / 2 - (m.pts[2 * i + 1] - yc) * s; }
    m.byClass = {};
    for (let i = 0; i < n; i++) (m.byClass[m.labels[i]] = m.byClass[m.labels[i]] || []).push(i);
  }
  function draw() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, S, S);
    const r = cur.slots.length > 3000 ? 1.5 : 2.5;
    ctx.globalAlpha = 0.75;
    for (const c in cur.byClass) {
      if (hidden.has(+c)) continue;
      ctx.fillStyle = colour(+c);
      for (const i of cur.byClass[c]) ctx.fillRect(cur.px[i] - r, cur.py[i] - r, 2 * r, 2 * r);
    }
    ctx.globalAlpha = 1;
    const ring = (i, style, rad) => {
      ctx.strokeStyle = style; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(cur.px[i], cur.py[i], rad, 0, 2 * Math.PI); ctx.stroke();
    };
    pins.forEach((slot, j) => {
      const i = cur.slots.indexOf(slot);
      if (i >= 0) { ring(i, "#000", 6); ctx.fillStyle = "#000"; ctx.font = "bold 12px sans-serif"; ctx.fillText("AB"[j], cur.px[i] + 7, cur.py[i] - 7); }
    });
    if (hover >= 0) ring(hover, "#d00", 7);
  }
  function nearest(mx, my) {  // the nearest visible point within 8 px; ties go to the first point
    let best = -1, bd = 64;
    for (let i = 0; i < cur.slots.length; i++) {
      if (hidden.has(cur.labels[i])) continue;
      const dx = cur.px[i] - mx, dy = cur.py[i] - my, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  const tip = $("tooltip");
  function showTip(i, mx, my) {
    const slot = cur.slots[i];
    tip.replaceChildren();
    tip.appendChild(el("div", { className: "cap" }, `#${ids[slot]} · ${className(labels[slot])}`));
    tip.appendChild(figure(images, slot, 3, "image"));
    tip.appendChild(reconFigure(slot, 3));
    if (K > 0) {
      const row = el("div");
      row.appendChild(el("div", {}, `nearest ${K} in code space:`));
      for (let j = 0; j < K; j++) {
        const s = nbrs[slot * K + j];
        row.appendChild(figure(images, s, 1.5, `#${ids[s]} ${className(labels[s])}`));
      }
      tip.appendChild(row);
    }
    tip.style.display = "block";
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = (mx + 14 + w > S ? Math.max(0, mx - 14 - w) : mx + 14) + "px";
    tip.style.top = Math.max(0, Math.min(S - h, my - h / 2)) + "px";
  }
  canvas.addEventListener("mousemove", (e) => {
    const b = canvas.getBoundingClientRect(), mx = e.clientX - b.left - canvas.clientLeft, my = e.clientY - b.top - canvas.clientTop;
    const i = nearest(mx, my);
    if (i !== hover) { hover = i; draw(); }
    if (i >= 0) showTip(i, mx, my); else tip.style.display = "none";
  });
  canvas.addEventListener("mouseleave", () => { hover = -1; tip.style.display = "none"; draw(); });
  canvas.addEventListener("click", () => {
    if (hover < 0) return;
    const slot = cur.slots[hover], at = pins.indexOf(slot);
    if (at >= 0) pins.splice(at, 1); else { pins.push(slot); if (pins.length > 2) pins.shift(); }
    if (at < 0) { setWalk(codeOf(slot)); if (slot < D.denoise.count) { $("dn-image").value = slot; updateDenoise(); } }
    updatePins(); draw();
  });
  function buildLegend() {
    const lg = $("legend"); lg.replaceChildren();
    const counts = {};
    for (let i = 0; i < cur.labels.length; i++) counts[cur.labels[i]] = (counts[cur.labels[i]] || 0) + 1;
    Object.keys(counts).map(Number).sort((a, b) => a - b).forEach((c) => {
      const b = el("button", { className: hidden.has(c) ? "off" : "", title: "hide / show" });
      b.dataset.cls = c;
      const sw = el("span", { className: "sw" }); sw.style.background = colour(c);
      b.append(sw, `${className(c)} (${counts[c]})`);
      b.onclick = () => { hidden.has(c) ? hidden.delete(c) : hidden.add(c); b.classList.toggle("off"); draw(); };
      lg.appendChild(b);
    });
  }
  function useMap(k) { cur = maps[k]; if (!cur.px) project(cur); hover = -1; buildLegend(); draw(); api.map = k; }
  const sel = $("map-select");
  maps.forEach((m, k) => sel.appendChild(el("option", { value: k }, m.label)));
  if (maps.length < 2) $("map-choice").style.display = "none";
  sel.onchange = () => useMap(+sel.value);
  api.maps = maps;
  api.pixel = (i) => [cur.px[i], cur.py[i]];
  useMap(0);

  function updatePins() {
    const box = $("pins"); box.replaceChildren();
    if (!pins.length) { box.appendChild(el("p", { className: "note" }, "Nothing pinned yet: click a point.")); }
    pins.forEach((slot, j) => {
      const row = el("div");
      row.appendChild(el("div", { className: "cap" }, `${"AB"[j]}: #${ids[slot]} · ${className(labels[slot])}`));
      row.appendChild(figure(images, slot, 3, "image"));
      row.appendChild(reconFigure(slot, 3));
      for (let q = 0; q < K; q++) { const s = nbrs[slot * K + q]; row.appendChild(figure(images, s, 1.5, `#${ids[s]}`)); }
      box.appendChild(row);
    });
    updateInterp();
  }

  // ---------------------------------------------------------------- the decoder, by hand
  const dec = D.decoder ? D.decoder.layers.map((l) => (l.type === "linear" ?
    { type: "linear", n_in: l.in, n_out: l.out, w: f32(l.weight), b: f32(l.bias) } : { type: l.type })) : null;
  const codes = D.decoder ? f32(D.decoder.codes) : null, DIM = D.decoder ? D.decoder.dim : 0;
  function decode(z) {  // Linear (y = W h + b, W of shape out x in as torch stores it) and activations
    let h = Float64Array.from(z);
    for (const L of dec) {
      if (L.type === "linear") {
        const o = new Float64Array(L.n_out);
        for (let r = 0; r < L.n_out; r++) {
          let s = L.b[r];
          const off = r * L.n_in;
          for (let c = 0; c < L.n_in; c++) s += L.w[off + c] * h[c];
          o[r] = s;
        }
        h = o;
      } else if (L.type === "relu") { for (let i = 0; i < h.length; i++) if (h[i] < 0) h[i] = 0; }
      else if (L.type === "sigmoid") { for (let i = 0; i < h.length; i++) h[i] = 1 / (1 + Math.exp(-h[i])); }
      else if (L.type === "tanh") { for (let i = 0; i < h.length; i++) h[i] = Math.tanh(h[i]); }
    }
    return h;
  }
  const codeOf = (slot) => (codes ? Array.from(codes.subarray(slot * DIM, (slot + 1) * DIM)) : null);
  const sliders = [];
  function renderWalk() {
    const z = sliders.map((s) => parseFloat(s.value));
    sliders.forEach((s, j) => { s.nextSibling.textContent = z[j].toFixed(2); });
    const out = decode(z);
    api.walk.code = z; api.walk.output = Array.from(out);
    putPixels($("walk-out"), out, 8);
  }
  function setWalk(z) {
    if (!dec || !z) return;
    z.forEach((v, j) => { sliders[j].value = v; });
    renderWalk();
  }
  function updateInterp() {
    if (!dec) return;
    const box = $("interp"); box.replaceChildren();
    if (pins.length < 2) { $("interp-note").style.display = ""; return; }
    $("interp-note").style.display = "none";
    const a = codeOf(pins[0]), b = codeOf(pins[1]), steps = 9;
    for (let q = 0; q < steps; q++) {
      const t = q / (steps - 1), z = a.map((v, j) => (1 - t) * v + t * b[j]);
      const f = el("div", { className: "fig" }), c = el("canvas", { className: "px" });
      putPixels(c, decode(z), 3); f.append(c, el("div", {}, q === 0 ? "A" : q === steps - 1 ? "B" : `t=${t.toFixed(2)}`));
      box.appendChild(f);
    }
  }
  if (dec) {
    $("walk-off").style.display = "none";
    const box = $("sliders");
    for (let j = 0; j < DIM; j++) {
      const lab = el("label", {}, `z${j}`);
      const s = el("input", { type: "range", min: D.decoder.lo[j], max: D.decoder.hi[j], step: "any", id: "z" + j });
      const o = el("output");
      s.addEventListener("input", renderWalk);
      lab.append(s, o); box.appendChild(lab); sliders.push(s);
    }
    $("walk-zero").onclick = () => setWalk(new Array(DIM).fill(0));
    $("walk-first").onclick = () => setWalk(codeOf(0));
    setWalk(codeOf(0));
    api.decode = (z) => Array.from(decode(z));
  } else {
    $("walk-on").style.display = "none";
    $("walk-off").textContent = "Not available for this model: " +
      (D.notes.find((n) => n.includes("decoder")) || "its decoder cannot be computed in the page.");
  }

  // ---------------------------------------------------------------- denoise
  const DN = D.denoise, F = DN.factors.length;
  function updateDenoise() {
    if (!DN.count) return;
    const s = +$("dn-image").value, fi = +$("dn-factor").value, key = DN.factors[fi], ps = DN.psnr[key];
    $("dn-factor-out").textContent = key;
    const box = $("dn-figs"); box.replaceChildren();
    box.appendChild(figure(dsheet, fi * DN.count + s, 4, `noisy ${ps.noisy[s].toFixed(2)} dB`, "dn-noisy"));
    box.appendChild(figure(dsheet, (F + fi) * DN.count + s, 4, `cleaned (this model) ${ps.model[s].toFixed(2)} dB`, "dn-model"));
    const ci = DN.classical.indexOf(key);
    if (ci >= 0) {
      const m = DN.methods[key];
      box.appendChild(figure(dsheet, (2 * F + ci) * DN.count + s, 4, `${m.label} ${ps.classical[s].toFixed(2)} dB`, "dn-classical"));
      $("dn-method").textContent = `Best classical method at noise ${key} in this run's evaluation.json: ${m.label}` +
        (m.param !== null && m.param !== undefined ? ` (tuned parameter ${m.param})` : "") +
        `, mean PSNR ${m.mean_psnr.toFixed(2)} dB on ${m.images} test images.`;
    } else {
      $("dn-method").textContent = "No classical method to compare with: run `aelab evaluate` on this run to add the best one.";
    }
    box.appendChild(figure(images, s, 4, "original", "dn-original"));
    api.denoise = { slot: s, factor: key };
  }
  if (DN.count) {
    const pick = $("dn-image");
    for (let s = 0; s < DN.count; s++) pick.appendChild(el("option", { value: s }, `#${ids[s]} ${className(labels[s])}`));
    pick.onchange = updateDenoise;
    const fs = $("dn-factor"); fs.max = F - 1; fs.value = Math.min(1, F - 1);
    fs.addEventListener("input", updateDenoise);
  } else {
    $("denoise-section").style.display = "none";
  }
  function refreshImages() { updatePins(); updateDenoise(); }
})();
