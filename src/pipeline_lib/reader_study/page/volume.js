// Volume viewer of the reader-study page (volume kits only; app.js loads it when kit.js says
// mode "volume"). A case is one volume, stored 8-bit in volumes/<name>.js, C-order (C, X, Y, Z),
// RAS voxel order (x to the patient's right, y anterior, z superior). It is shown in three linked
// panes in radiological display, as the slice kits' slices (imaging/slice_geometry.ras_to_display):
//   axial    slice z: rows anterior first (y descending), columns the patient's right first (x descending)
//   coronal  slice y: rows superior first (z descending), columns x descending
//   sagittal slice x: rows superior first, columns anterior first (y descending)
// Channels are shown side by side in every pane, as the slice kits' stacked images.
// Scrolling: mouse wheel over a pane, its slider, or the arrow keys (up/down: slice, left/right:
// which pane). A click moves the crosshair there and the other two planes to that point; a drag
// sets window/level (as on the slice page). Window/level is a look-up table applied to the stored
// grey levels, so the canvas pixels are out = clip((v/255 - (level - window/2)) / window) * 255.
(function () {
  "use strict";

  var PLANES = ["axial", "coronal", "sagittal"];
  var TITLES = { axial: "Axial", coronal: "Coronal", sagittal: "Sagittal" };
  var DRAG_PX = 4;        // a pointer that moves less than this is a click (crosshair), else a drag
  var PX_PER_RANGE = 300; // px of drag for the whole grey range, as on the slice page
  var PANE_SPACE = 60;    // px between and around the three panes (style.css: gaps, padding, borders)
  var loaded = {};        // name -> voxels (Uint8Array), the shown and the preloaded volume only

  // Called by every volumes/<name>.js file.
  window.READER_VOLUME = function (name, base64) {
    var text = window.atob(base64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    loaded[name] = bytes;
  };

  function fetchVolume(name, done, fail) {
    if (loaded[name]) { done(loaded[name]); return; }
    var script = document.createElement("script");
    script.src = "volumes/" + name;
    script.onload = function () { script.remove(); if (loaded[name]) { done(loaded[name]); } else { fail(); } };
    script.onerror = function () { script.remove(); fail(); };
    document.head.appendChild(script);
  }

  function keepOnly(names) {
    Object.keys(loaded).forEach(function (name) { if (names.indexOf(name) < 0) { delete loaded[name]; } });
  }

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function element(tag, className, parent) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  // spec: kit.js's volume {shape: [X, Y, Z], channels, spacing_mm: [x, y, z], interpolation};
  // options.onWindowLevel(window, level): a drag asks the page for new window/level values.
  function create(container, spec, options) {
    var X = spec.shape[0], Y = spec.shape[1], Z = spec.shape[2], C = spec.channels;
    var sx = spec.spacing_mm[0], sy = spec.spacing_mm[1], sz = spec.spacing_mm[2];
    // Per plane: slice count, columns and rows of one channel, their mm, and the voxel behind a pixel.
    var geometry = {
      axial: { depth: Z, cols: X, rows: Y, colMm: sx, rowMm: sy,
        voxel: function (k, r, c) { return [X - 1 - c, Y - 1 - r, k]; },
        pixel: function (p) { return [Y - 1 - p[1], X - 1 - p[0]]; }, index: 2 },
      coronal: { depth: Y, cols: X, rows: Z, colMm: sx, rowMm: sz,
        voxel: function (k, r, c) { return [X - 1 - c, k, Z - 1 - r]; },
        pixel: function (p) { return [Z - 1 - p[2], X - 1 - p[0]]; }, index: 1 },
      sagittal: { depth: X, cols: Y, rows: Z, colMm: sy, rowMm: sz,
        voxel: function (k, r, c) { return [k, Y - 1 - c, Z - 1 - r]; },
        pixel: function (p) { return [Z - 1 - p[2], Y - 1 - p[1]]; }, index: 0 }
    };
    var voxels = null;
    var point = [0, 0, 0];  // the crosshair's voxel (x, y, z): each pane shows the slice through it
    var lut = new Uint8ClampedArray(256);
    var active = "axial";
    var root = element("div", "volume-viewer", container);
    root.id = options.id || "";
    var panes = {};

    PLANES.forEach(function (plane) {
      var g = geometry[plane];
      var pane = element("div", "pane", root);
      pane.setAttribute("data-plane", plane);
      var title = element("div", "pane-title", pane);
      element("span", "", title).textContent = TITLES[plane] + " ";
      var readout = element("span", "readout", title);
      var box = element("div", "canvas-box", pane);
      var canvas = element("canvas", "", box);
      canvas.width = g.cols * C;
      canvas.height = g.rows;
      canvas.style.imageRendering = spec.interpolation === "nearest" ? "pixelated" : "auto";
      var across = element("div", "cross cross-h", box);
      var downs = [];
      for (var ch = 0; ch < C; ch++) { downs.push(element("div", "cross cross-v", box)); }
      var slider = element("input", "", pane);
      slider.type = "range";
      slider.min = "0";
      slider.max = String(g.depth - 1);
      slider.step = "1";
      slider.setAttribute("aria-label", TITLES[plane] + " slice");
      slider.addEventListener("input", function () { setSlice(plane, Number(slider.value)); });
      slider.addEventListener("change", function () { slider.blur(); });
      panes[plane] = { pane: pane, canvas: canvas, context: canvas.getContext("2d"), slider: slider,
        readout: readout, across: across, downs: downs, image: null };
      pane.addEventListener("wheel", function (event) {
        event.preventDefault();
        setActive(plane);
        step(plane, event.deltaY > 0 ? 1 : event.deltaY < 0 ? -1 : 0);
      }, { passive: false });
      pane.addEventListener("pointerenter", function () { setActive(plane); });
      listenPointer(plane, box, canvas);
    });

    function listenPointer(plane, box, canvas) {
      var press = null;
      box.addEventListener("pointerdown", function (event) {
        if (event.button !== 0) { return; }
        press = { x: event.clientX, y: event.clientY, drag: false,
          window: Number(root.getAttribute("data-window")), level: Number(root.getAttribute("data-level")) };
        box.setPointerCapture(event.pointerId);
        setActive(plane);
        event.preventDefault();
      });
      box.addEventListener("pointermove", function (event) {
        if (!press) { return; }
        var dx = event.clientX - press.x, dy = event.clientY - press.y;
        if (!press.drag && Math.abs(dx) + Math.abs(dy) < DRAG_PX) { return; }
        press.drag = true;  // right widens the window, up raises the level
        options.onWindowLevel(press.window + dx / PX_PER_RANGE, press.level - dy / PX_PER_RANGE);
      });
      box.addEventListener("pointerup", function (event) {
        if (press && !press.drag) { pointAt(plane, canvas, event); }
        press = null;
      });
      box.addEventListener("pointercancel", function () { press = null; });
    }

    function pointAt(plane, canvas, event) {
      var g = geometry[plane], rect = canvas.getBoundingClientRect();
      if (!voxels || !rect.width || !rect.height) { return; }
      var column = Math.floor((event.clientX - rect.left) / rect.width * g.cols * C);
      var row = Math.floor((event.clientY - rect.top) / rect.height * g.rows);
      if (column < 0 || row < 0 || column >= g.cols * C || row >= g.rows) { return; }
      var p = g.voxel(point[g.index], row, column % g.cols);
      point = [p[0], p[1], p[2]];
      renderAll();
    }

    function setActive(plane) {
      active = plane;
      PLANES.forEach(function (name) { panes[name].pane.classList.toggle("active", name === plane); });
      root.setAttribute("data-active", plane);
    }

    function setSlice(plane, index) {
      var g = geometry[plane];
      point[g.index] = clamp(Math.round(index), 0, g.depth - 1);
      renderAll();
    }

    function step(plane, delta) { if (voxels && delta) { setSlice(plane, point[geometry[plane].index] + delta); } }

    function render(plane) {
      var g = geometry[plane], view = panes[plane], k = point[g.index];
      var width = g.cols * C;
      if (!view.image) { view.image = view.context.createImageData(width, g.rows); }
      var data = view.image.data;
      for (var ch = 0; ch < C; ch++) {
        for (var r = 0; r < g.rows; r++) {
          for (var c = 0; c < g.cols; c++) {
            var p = g.voxel(k, r, c);
            var value = lut[voxels[((ch * X + p[0]) * Y + p[1]) * Z + p[2]]];
            var j = 4 * (r * width + ch * g.cols + c);
            data[j] = data[j + 1] = data[j + 2] = value;
            data[j + 3] = 255;
          }
        }
      }
      view.context.putImageData(view.image, 0, 0);
      view.canvas.setAttribute("data-index", String(k));
      view.slider.value = String(k);
      view.readout.textContent = (k + 1) + " / " + g.depth;
      var at = g.pixel(point);  // the crosshair: row and column of the point in this pane
      view.across.style.top = (100 * (at[0] + 0.5) / g.rows) + "%";
      view.downs.forEach(function (line, ch) {
        line.style.left = (100 * (ch * g.cols + at[1] + 0.5) / width) + "%";
      });
    }

    function renderAll() {
      if (!voxels) { return; }
      PLANES.forEach(render);
      root.setAttribute("data-point", point.join(","));
    }

    function setWindowLevel(windowWidth, level) {
      for (var v = 0; v < 256; v++) {
        lut[v] = Math.round(clamp((v / 255 - (level - windowWidth / 2)) / windowWidth, 0, 1) * 255);
      }
      root.setAttribute("data-window", windowWidth.toFixed(3));
      root.setAttribute("data-level", level.toFixed(3));
      renderAll();
    }

    // Fit the three panes side by side into width x height px, in mm proportions, times zoom.
    function layout(width, height, zoom) {
      var mmWide = 0, mmHigh = 0;
      PLANES.forEach(function (plane) {
        var g = geometry[plane];
        mmWide += g.cols * C * g.colMm;
        mmHigh = Math.max(mmHigh, g.rows * g.rowMm);
      });
      var scale = Math.min((width - PANE_SPACE) / mmWide, height / mmHigh) * zoom;
      PLANES.forEach(function (plane) {
        var g = geometry[plane], canvas = panes[plane].canvas;
        canvas.style.width = Math.round(g.cols * C * g.colMm * scale) + "px";
        canvas.style.height = Math.round(g.rows * g.rowMm * scale) + "px";
      });
      return scale;
    }

    // Show volume ``name`` with the crosshair at the grid's centre; done() once drawn.
    function show(name, done, fail) {
      keepOnly([name]);  // the previous volume goes; a preloaded one stays
      fetchVolume(name, function (data) {
        if (data.length !== C * X * Y * Z) { fail(); return; }
        voxels = data;
        point = [Math.floor(X / 2), Math.floor(Y / 2), Math.floor(Z / 2)];
        setActive("axial");
        renderAll();
        root.setAttribute("data-volume", name);
        done();
      }, fail);
    }

    function preload(name) { fetchVolume(name, function () {}, function () {}); }

    // Arrow keys: up/down scroll the active pane, left/right choose the pane. True when handled.
    function key(name) {
      if (!voxels) { return false; }
      if (name === "ArrowUp" || name === "ArrowDown") {
        step(active, name === "ArrowUp" ? 1 : -1);
      } else if (name === "ArrowLeft" || name === "ArrowRight") {
        var k = PLANES.indexOf(active) + (name === "ArrowRight" ? 1 : PLANES.length - 1);
        setActive(PLANES[k % PLANES.length]);
      } else {
        return false;
      }
      return true;
    }

    function setVisible(visible) { root.style.visibility = visible ? "visible" : "hidden"; }

    setWindowLevel(1, 0.5);
    setActive("axial");
    return { root: root, show: show, preload: preload, setWindowLevel: setWindowLevel, layout: layout,
      key: key, setVisible: setVisible, step: step };
  }

  window.ReaderVolumes = { create: create };
}());
