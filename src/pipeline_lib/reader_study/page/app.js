// Reader-study page: shows the kit's images one at a time in a per-reader order,
// records real/synthetic answers (optional 1-5 confidence, response time, time-out),
// keeps progress in localStorage and exports one CSV file per reader.
// No network use: everything comes from kit.js and images/ next to this file.
// Time limit: when it runs out the image is hidden and the answer is still asked for; the row
// gets timed_out = 1 when the real/synthetic decision came after the image was hidden.
// response_ms runs from the image appearing to that decision. A reload shows the current
// image afresh (its timer restarts); answered images never come back.
// Viewing: the image is scaled to fit the window, with a zoom relative to that fit; window/level
// (drag on the image, or presets) maps grey levels through an SVG filter and is reset for every
// image, so each image is first seen as stored. Neither changes what is recorded.
// Volume kits (kit.js mode "volume"): every case is a volume shown by volume.js's viewer (three
// linked planes), loaded before the page starts; the flow, answers and export are the same.
(function () {
  "use strict";

  var KIT = window.READER_KIT;
  var VOLUMES = !!(KIT && KIT.mode === "volume");
  var viewer = null, practiceViewer = null;  // volume kits: the reading and the practice viewer
  var VOLUME_CONTROLS_HEIGHT = 80;  // px of pane titles and sliders in a volume kit
  var STORE_PREFIX = "readerkit.v1.";
  var ID_PATTERN = /^[A-Za-z0-9._-]{1,40}$/;
  var CSV_COLUMNS = ["kit_id", "reader_id", "order_index", "image", "answer", "confidence",
    "response_ms", "timed_out", "answered_at"];

  var state = null;    // saved progress of the current reader
  var current = null;  // the image on screen; null while none accepts answers
  var notice = "";     // shown instead of the usual hint with the next image
  var storageOk = true;
  var DEFAULT_WINDOW = 1, DEFAULT_LEVEL = 0.5;
  var ZOOM_STEP = 1.25, ZOOM_MIN = 0.5, ZOOM_MAX = 8;
  var RESERVED_HEIGHT = 270;  // px of the reading screen besides the image (bars, buttons, hint)
  var zoom = 1;               // relative to "fit the window"; kept from image to image
  var view = { window: DEFAULT_WINDOW, level: DEFAULT_LEVEL };
  var drag = null;

  function $(id) { return document.getElementById(id); }

  function showScreen(id) {
    ["start", "familiarisation", "reading", "done", "broken"].forEach(function (name) { $(name).hidden = name !== id; });
    document.body.setAttribute("data-screen", id);
  }

  function setReady(ready) { document.body.setAttribute("data-ready", ready ? "yes" : "no"); }

  // ----- per-reader order: FNV-1a seed -> mulberry32 -> Fisher-Yates (mirrored in reader_study.py)
  function fnv1a(text) {
    var value = 0x811c9dc5;
    for (var i = 0; i < text.length; i++) {
      value = Math.imul(value ^ text.charCodeAt(i), 0x01000193) >>> 0;
    }
    return value >>> 0;
  }

  function mulberry32(seed) {
    var a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      var t = Math.imul(a ^ (a >>> 15), 1 | a) >>> 0;
      t = ((t + (Math.imul(t ^ (t >>> 7), 61 | t) >>> 0)) >>> 0) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // The reader's scored images: their own set with per-reader kits, else the whole kit.
  function readerImages(readerId) {
    return KIT.readers ? (KIT.readers[readerId] || null) : KIT.images;
  }

  function readerOrder(readerId) {
    var order = readerImages(readerId).slice().sort();
    var next = mulberry32(fnv1a(KIT.kit_id + ":" + readerId));
    for (var i = order.length - 1; i > 0; i--) {
      var j = Math.floor(next() * (i + 1));
      var swap = order[i]; order[i] = order[j]; order[j] = swap;
    }
    if (KIT.image_blocks) {  // blocks in turn, shuffled within each (a stable sort keeps the shuffle)
      var position = {};
      order.forEach(function (name, k) { position[name] = k; });
      order.sort(function (a, b) {
        return (KIT.image_blocks[a] - KIT.image_blocks[b]) || (position[a] - position[b]);
      });
    }
    return order;
  }

  function blockCount() {
    if (!KIT.image_blocks) { return 0; }
    var seen = {};
    state.order.forEach(function (name) { seen[KIT.image_blocks[name]] = true; });
    return Object.keys(seen).length;
  }

  function blockNumber(index) {
    var seen = {}, count = 0;
    for (var k = 0; k <= index; k++) {
      var b = KIT.image_blocks[state.order[k]];
      if (!seen[b]) { seen[b] = true; count++; }
    }
    return count;
  }

  // ----- storage
  function storageKey(readerId) { return STORE_PREFIX + KIT.kit_id + "." + readerId; }

  function loadState(readerId) {
    try {
      var saved = JSON.parse(window.localStorage.getItem(storageKey(readerId)) || "null");
      if (saved && saved.kit_id === KIT.kit_id && saved.reader_id === readerId &&
          Array.isArray(saved.order) && saved.order.length === readerImages(readerId).length &&
          Array.isArray(saved.responses)) {
        return saved;
      }
    } catch (error) {
      storageOk = false;
    }
    return null;
  }

  function saveState() {
    try {
      window.localStorage.setItem(storageKey(state.reader_id), JSON.stringify(state));
      window.localStorage.setItem(STORE_PREFIX + KIT.kit_id + ".last_reader", state.reader_id);
    } catch (error) {
      storageOk = false;
      hint("Warning: this browser does not let the page save your progress. Do not close or reload the page until you have downloaded your answers.");
    }
  }

  function lastReader() {
    try { return window.localStorage.getItem(STORE_PREFIX + KIT.kit_id + ".last_reader") || ""; }
    catch (error) { return ""; }
  }

  // ----- flow
  function start(event) {
    event.preventDefault();
    var readerId = $("reader-id").value.trim();
    if (!ID_PATTERN.test(readerId)) {
      $("start-error").textContent = "Please enter a reader ID of 1 to 40 letters, digits, '-', '_' or '.'.";
      return;
    }
    if (!readerImages(readerId)) {
      $("start-error").textContent = "This reader ID is not part of this kit. Please use the ID the study coordinator gave you.";
      return;
    }
    $("start-error").textContent = "";
    state = loadState(readerId) || {
      kit_id: KIT.kit_id,
      reader_id: readerId,
      order: readerOrder(readerId),
      responses: [],
      familiarised: false,
      started_at: new Date().toISOString()
    };
    saveState();
    $("reader-label").textContent = "Reader " + readerId;
    if (state.responses.length >= state.order.length) {
      finish();
      return;
    }
    if (KIT.familiarisation && KIT.familiarisation.length && !state.familiarised && state.responses.length === 0) {
      showFamiliarisation(0);
      return;
    }
    beginReading();
  }

  // ----- familiarisation: cases shown with their answers before scoring; nothing is recorded
  function showFamiliarisation(index) {
    var cases = KIT.familiarisation;
    var item = cases[index];
    showScreen("familiarisation");
    $("fam-progress").textContent = "Practice case " + (index + 1) + " of " + cases.length;
    if (VOLUMES) {
      practiceViewer.layout(Math.max(300, contentWidth("familiarisation")), 420, 1);
      practiceViewer.setWindowLevel(DEFAULT_WINDOW, DEFAULT_LEVEL);
      practiceViewer.show(item.image, function () {}, function () { missing(item.image); });
    } else {
      var img = $("fam-image");
      img.style.width = Math.round(KIT.image_width * Math.min(1, 512 / KIT.image_height)) + "px";
      img.src = "images/" + item.image;
    }
    $("fam-answer").textContent = (VOLUMES ? "This volume is " : "This image is ") + (item.truth === "real" ?
      (VOLUMES ? "REAL (an MRI of a person)." : "REAL (an MRI slice of a person).") : "SYNTHETIC (made by a computer model).");
    $("fam-answer").setAttribute("data-truth", item.truth);
    $("fam-next").textContent = index + 1 < cases.length ? "Next practice case" : "Start the study";
    $("fam-next").onclick = function () {
      this.blur();
      if (index + 1 < cases.length) {
        showFamiliarisation(index + 1);
      } else {
        state.familiarised = true;
        saveState();
        beginReading();
      }
    };
  }

  function beginReading() {    notice = state.responses.length > 0 ?
      "Welcome back: " + state.responses.length + " of " + state.order.length + (VOLUMES ? " volumes" : " images") + " already answered." : "";
    showScreen("reading");
    layoutImage();  // the screen has its width only once shown
    showImage(state.responses.length);
  }

  function showImage(index) {
    stopTimer();
    current = null;
    setReady(false);
    var name = state.order[index];
    setShown(false);
    $("time-up").hidden = true;
    markSelected(".answer", null, "data-answer");
    markSelected(".conf", null, "data-confidence");
    var blocks = blockCount();
    var block = blocks ? blockNumber(index) : 0;
    $("progress").textContent = (blocks ? "Block " + block + " of " + blocks + " · " : "") +
      (VOLUMES ? "Volume " : "Image ") + (index + 1) + " of " + state.order.length;
    document.body.setAttribute("data-block", String(block));
    if (blocks && index > 0 && block !== blockNumber(index - 1)) {
      notice = "Block " + (block - 1) + " is done. Block " + block + " of " + blocks + " begins.";
    }
    $("progress-bar").max = state.order.length;
    $("progress-bar").value = index;
    setWindowLevel(DEFAULT_WINDOW, DEFAULT_LEVEL);
    var next = index + 1 < state.order.length ? state.order[index + 1] : null;
    if (VOLUMES) {
      viewer.show(name, function () { imageShown(index, name); }, function () { missing(name); });
      if (next) { viewer.preload(next); }
      return;
    }
    var img = $("image");
    img.onload = function () { imageShown(index, name); };
    img.onerror = function () { missing(name); };
    img.src = "images/" + name;
    if (next) {
      new Image().src = "images/" + next;  // preload: the next image appears at once
    }
  }

  function missing(name) {
    hint("The " + (VOLUMES ? "volume " : "image ") + name + " could not be loaded. Please tell the study " +
      "coordinator; the kit folder may be incomplete.");
  }

  // The case on screen, hidden while it loads and when the time limit is up.
  function setShown(visible) {
    if (VOLUMES) { viewer.setVisible(visible); } else { $("image").style.visibility = visible ? "visible" : "hidden"; }
  }

  function imageShown(index, name) {
    setShown(true);
    current = { index: index, name: name, shownAt: performance.now(), hiddenAt: null,
      answer: null, decisionAt: null, timer: null };
    if (KIT.time_limit_s) { startTimer(current); }
    hint(notice || (KIT.ask_confidence ? "Real (R) or synthetic (S)? Then how sure (1-5)." : "Real (R) or synthetic (S)?"));
    notice = "";
    setReady(true);
  }

  function startTimer(shown) {
    var limitMs = KIT.time_limit_s * 1000;
    var fill = $("timer-fill");
    $("timer").hidden = false;
    fill.style.transition = "none";
    fill.style.width = "100%";
    void fill.offsetWidth;  // restart the CSS transition from a full bar
    fill.style.transition = "width " + limitMs + "ms linear";
    fill.style.width = "0%";
    shown.timer = window.setTimeout(function () {
      if (current !== shown) { return; }
      shown.hiddenAt = performance.now();
      setShown(false);
      $("time-up").hidden = false;
    }, limitMs);
  }

  function stopTimer() {
    if (current && current.timer) { window.clearTimeout(current.timer); }
  }

  function choose(answer) {
    if (!current) { return; }
    current.answer = answer;
    current.decisionAt = performance.now();
    markSelected(".answer", answer, "data-answer");
    if (KIT.ask_confidence) {
      hint("You chose " + answer + ". Now: how sure are you, 1 (guessing) to 5 (certain)?");
    } else {
      commit("");
    }
  }

  function rate(confidence) {
    if (!current || !KIT.ask_confidence) { return; }
    if (!current.answer) {
      hint("First choose Real (R) or Synthetic (S), then how sure you are (1-5).");
      return;
    }
    markSelected(".conf", String(confidence), "data-confidence");
    commit(String(confidence));
  }

  function commit(confidence) {
    var shown = current;
    current = null;
    setReady(false);
    if (shown.timer) { window.clearTimeout(shown.timer); }
    state.responses.push({
      order_index: shown.index + 1,
      image: shown.name,
      answer: shown.answer,
      confidence: confidence,
      response_ms: Math.round(shown.decisionAt - shown.shownAt),
      // the decision came after the time limit had hidden the image
      timed_out: shown.hiddenAt !== null && shown.decisionAt >= shown.hiddenAt ? 1 : 0,
      answered_at: new Date().toISOString()
    });
    saveState();
    if (state.responses.length >= state.order.length) {
      finish();
    } else {
      showImage(state.responses.length);
    }
  }

  function finish() {
    $("timer").hidden = true;
    $("progress-bar").value = state.order.length;
    $("n-done").textContent = String(state.order.length);
    $("file-name").textContent = fileName();
    showScreen("done");
  }

  // ----- viewing: size, zoom, window/level
  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function layoutImage() {
    var stage = $("stage");
    var width = Math.max(64, stage.parentElement.clientWidth);
    var height = Math.max(128, window.innerHeight - RESERVED_HEIGHT);
    if (VOLUMES) {  // the reading screen's whole width (style.css)
      var scale = viewer.layout(contentWidth("reading"), height - VOLUME_CONTROLS_HEIGHT, zoom);
      $("zoom-level").textContent = scale.toFixed(1) + " px/mm";
      stage.classList.toggle("zoomed", zoom > 1);
      document.body.setAttribute("data-zoom", String(zoom));
      return;
    }
    var fit = Math.min(width / KIT.image_width, height / KIT.image_height);
    var img = $("image");
    img.style.width = Math.round(KIT.image_width * fit * zoom) + "px";
    img.style.height = Math.round(KIT.image_height * fit * zoom) + "px";
    stage.classList.toggle("zoomed", zoom > 1);
    $("zoom-level").textContent = Math.round(100 * fit * zoom) + " %";
    document.body.setAttribute("data-zoom", String(zoom));
  }

  // px inside a screen's padding
  function contentWidth(id) {
    var style = window.getComputedStyle($(id));
    return $(id).clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  }

  function setZoom(value) {
    zoom = clamp(value, ZOOM_MIN, ZOOM_MAX);
    layoutImage();
  }

  function setWindowLevel(windowWidth, level) {
    view.window = clamp(windowWidth, 0.02, 2);
    view.level = clamp(level, 0, 1);
    var slope = 1 / view.window;
    var intercept = -(view.level - view.window / 2) / view.window;
    Array.prototype.forEach.call(document.querySelectorAll("#window-level feComponentTransfer > *"), function (f) {
      f.setAttribute("slope", slope.toFixed(6));
      f.setAttribute("intercept", intercept.toFixed(6));
    });
    var img = $("image");
    img.setAttribute("data-window", view.window.toFixed(3));
    img.setAttribute("data-level", view.level.toFixed(3));
    if (viewer) { viewer.setWindowLevel(view.window, view.level); }
    $("wl-readout").textContent = "W " + Math.round(100 * view.window) + " %, L " + Math.round(100 * view.level) + " %";
  }

  function startDrag(event) {
    if (event.button !== 0) { return; }
    drag = { x: event.clientX, y: event.clientY, window: view.window, level: view.level };
    $("image").setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function moveDrag(event) {
    if (!drag) { return; }
    // 300 px of drag = the whole grey range; right widens the window, up raises the level.
    setWindowLevel(drag.window + (event.clientX - drag.x) / 300, drag.level - (event.clientY - drag.y) / 300);
  }

  function endDrag() { drag = null; }

  // ----- export
  function fileName() { return "reader-" + state.reader_id + "-" + KIT.kit_id + ".csv"; }

  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function toCsv() {
    var lines = [CSV_COLUMNS.join(",")];
    state.responses.forEach(function (row) {
      var full = { kit_id: KIT.kit_id, reader_id: state.reader_id };
      Object.keys(row).forEach(function (key) { full[key] = row[key]; });
      lines.push(CSV_COLUMNS.map(function (column) { return csvCell(full[column]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function download() {
    if (!state) { return; }
    var blob = new Blob([toCsv()], { type: "text/csv;charset=utf-8" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = fileName();
    document.body.appendChild(link);
    link.click();
    window.setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  // ----- helpers and wiring
  function hint(text) { $("hint").textContent = text; }

  function markSelected(selector, value, attribute) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), function (button) {
      button.classList.toggle("selected", value !== null && button.getAttribute(attribute) === value);
    });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var screen = document.body.getAttribute("data-screen");
    // arrows scroll a volume (held down they keep scrolling) on the practice and reading screens
    var shown = screen === "reading" ? viewer : screen === "familiarisation" ? practiceViewer : null;
    if (VOLUMES && shown && shown.key(event.key)) {
      event.preventDefault();
      return;
    }
    if (event.repeat || screen !== "reading") { return; }
    var key = event.key.toLowerCase();
    if (key === "r") { choose("real"); }
    else if (key === "s") { choose("synthetic"); }
    else if (/^[1-5]$/.test(key)) { rate(Number(key)); }
    else { return; }
    event.preventDefault();
  }

  function init() {
    if (!KIT || !Array.isArray(KIT.images) || !KIT.kit_id) {
      showScreen("broken");
      return;
    }
    if (VOLUMES && !window.ReaderVolumes) {  // the viewer ships with volume kits only
      var script = document.createElement("script");
      script.src = "volume.js";
      script.onload = init;
      script.onerror = function () { showScreen("broken"); };
      document.head.appendChild(script);
      return;
    }
    if (VOLUMES) { initVolumes(); }
    document.title = KIT.title;
    $("title").textContent = KIT.title;
    var counts = KIT.readers ? Object.keys(KIT.readers).map(function (r) { return KIT.readers[r].length; }) :
      [KIT.images.length];
    var low = Math.min.apply(null, counts), high = Math.max.apply(null, counts);
    $("n-images").textContent = low === high ? String(low) : "about " + low + " to " + high;
    $("familiarisation-instructions").hidden = !(KIT.familiarisation && KIT.familiarisation.length);
    $("n-familiarisation").textContent = String((KIT.familiarisation || []).length);
    $("blocks-instructions").hidden = !KIT.image_blocks;
    $("kit-id-start").textContent = KIT.kit_id;
    $("kit-id-done").textContent = KIT.kit_id;
    $("confidence-instructions").hidden = !KIT.ask_confidence;
    $("no-confidence-instructions").hidden = !!KIT.ask_confidence;
    $("confidence").hidden = !KIT.ask_confidence;
    if (KIT.time_limit_s) {
      $("time-instructions").hidden = false;
      $("time-limit").textContent = String(KIT.time_limit_s);
    }
    var img = $("image");
    img.width = KIT.image_width;
    img.height = KIT.image_height;
    $("reader-id").value = lastReader();
    $("start-form").addEventListener("submit", start);
    // buttons give focus back, so a later Enter or Space cannot repeat an answer on the next image
    $("answer-real").addEventListener("click", function () { this.blur(); choose("real"); });
    $("answer-synthetic").addEventListener("click", function () { this.blur(); choose("synthetic"); });
    Array.prototype.forEach.call(document.querySelectorAll(".conf"), function (button) {
      button.addEventListener("click", function () { button.blur(); rate(Number(button.getAttribute("data-confidence"))); });
    });
    $("zoom-in").addEventListener("click", function () { this.blur(); setZoom(zoom * ZOOM_STEP); });
    $("zoom-out").addEventListener("click", function () { this.blur(); setZoom(zoom / ZOOM_STEP); });
    $("zoom-fit").addEventListener("click", function () { this.blur(); setZoom(1); });
    Array.prototype.forEach.call(document.querySelectorAll(".wl-preset"), function (button) {
      button.addEventListener("click", function () {
        button.blur();
        setWindowLevel(Number(button.getAttribute("data-window")), Number(button.getAttribute("data-level")));
      });
    });
    if (!VOLUMES) { img.addEventListener("pointerdown", startDrag); }
    img.addEventListener("pointermove", moveDrag);
    img.addEventListener("pointerup", endDrag);
    img.addEventListener("pointercancel", endDrag);
    window.addEventListener("resize", layoutImage);
    layoutImage();
    setWindowLevel(DEFAULT_WINDOW, DEFAULT_LEVEL);
    $("download-partial").addEventListener("click", download);
    $("download-final").addEventListener("click", download);
    document.addEventListener("keydown", onKey);
    setReady(false);
    showScreen("start");
  }

  // Volume kits: the viewers take the image's place; the instructions speak of volumes.
  function initVolumes() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-volume-text]"), function (span) {
      span.textContent = span.getAttribute("data-volume-text");
    });
    $("volume-instructions").hidden = false;
    $("view-help").textContent = "Wheel, slider or \u2191/\u2193: slice (\u2190/\u2192: plane). Click: crosshair. " +
      "Drag: left/right = window, up/down = level. Both reset for every volume.";
    $("image").hidden = true;
    $("fam-image").hidden = true;
    document.body.setAttribute("data-mode", "volume");
    viewer = window.ReaderVolumes.create($("stage"), KIT.volume,
      { id: "volume-viewer", onWindowLevel: function (w, l) { setWindowLevel(w, l); } });
    practiceViewer = window.ReaderVolumes.create($("fam-stage"), KIT.volume,
      { id: "practice-viewer", onWindowLevel: function (w, l) { practiceViewer.setWindowLevel(clamp(w, 0.02, 2), clamp(l, 0, 1)); } });
    $("stage").insertBefore(viewer.root, $("time-up"));
  }

  init();
}());
