/* On-screen keyboard for the kiosk's touch screen, which has no physical keyboard.

   Built once at load and docked at the bottom while a text-like field has focus: input[type=text|
   email|tel|search] and textarea, unless the field or an ancestor has data-osk="off" or the field
   has inputmode="none", or it is disabled or read-only. Layouts:
     letters  English plus the Turkish and Dutch letters (ç ğ ı ö ş ü é ë ó ï; İ is Shift+i when the
              page or field is lang="tr"), digits, @ . - _ + ' and space;
     email    the same letters with @ and . large and no space (type=email or inputmode=email);
     accents  a page of 66 accented Latin letters (the àé key), back to letters after one;
     numpad   a large 0-9, +, space pad (type=tel, inputmode=tel|numeric).
   A long press on a letter offers all of its Latin variants (Vietnamese included) in a strip.
   Shift is one-shot, Caps stays; autocapitalize="words|sentences|characters" pre-arms Shift.
   Backspace repeats while held. ↵ moves to the next field of the form, or on the last one submits
   it the way Enter does (a click on the default button); in a textarea it starts a new line.

   Keys are <button type="button" tabindex="-1">: they never submit a form and never take focus
   (pointerdown is cancelled), so the caret stays in the field. Text goes in at the caret through
   the browser's own editing (execCommand insertText/delete), so the field fires trusted
   beforeinput/input events and its change event, and keeps maxlength; where that is not available
   setRangeText at selectionStart/End plus a synthetic input (and change on blur) does the same.
   CSP-clean: no inline code or style; only classes and the hidden attribute change. */
(function () {
  "use strict";
  if (window.kioskKeyboard) { return; } // loaded twice: keep the first keyboard

  var LONG_PRESS_MS = 450;
  var REPEAT_DELAY_MS = 450;
  var REPEAT_EVERY_MS = 75;
  var TEXT_TYPES = new Set(["text", "email", "tel", "search"]);
  var NOT_FIELDS = new Set(["hidden", "submit", "reset", "button", "image"]);
  var IMPLICIT_BLOCKERS = new Set(["text", "search", "url", "tel", "email", "password", "date", "month",
    "week", "time", "datetime-local", "number"]);

  var L10N = {
    en: {
      keyboard: "On-screen keyboard", shift: "Shift", caps: "Caps Lock", backspace: "Backspace",
      space: "Space", next: "Next", done: "Done", newline: "New line", accents: "Accented letters",
      letters: "Letters", hide: "Hide keyboard", close: "Close", variants: "Accented letters",
      at: "At sign", dot: "Dot", hyphen: "Hyphen", underscore: "Underscore", apostrophe: "Apostrophe",
      plus: "Plus"
    },
    tr: {
      keyboard: "Ekran klavyesi", shift: "Büyük harf", caps: "Büyük harf kilidi", backspace: "Geri sil",
      space: "Boşluk", next: "İleri", done: "Tamam", newline: "Yeni satır", accents: "Aksanlı harfler",
      letters: "Harfler", hide: "Klavyeyi gizle", close: "Kapat", variants: "Aksanlı harfler",
      at: "Et işareti", dot: "Nokta", hyphen: "Kısa çizgi", underscore: "Alt çizgi",
      apostrophe: "Kesme işareti", plus: "Artı"
    },
    nl: {
      keyboard: "Schermtoetsenbord", shift: "Hoofdletter", caps: "Hoofdletters vast", backspace: "Wissen",
      space: "Spatie", next: "Volgende", done: "Gereed", newline: "Nieuwe regel",
      accents: "Letters met accenten", letters: "Letters", hide: "Toetsenbord verbergen", close: "Sluiten",
      variants: "Letters met accenten", at: "Apenstaartje", dot: "Punt", hyphen: "Koppelteken",
      underscore: "Liggend streepje", apostrophe: "Apostrof", plus: "Plus"
    },
    zh: {
      keyboard: "屏幕键盘", shift: "上档", caps: "大写锁定", backspace: "退格", space: "空格",
      next: "下一项", done: "完成", newline: "换行", accents: "带重音符号的字母", letters: "字母",
      hide: "隐藏键盘", close: "关闭", variants: "带重音符号的字母", at: "At 符号", dot: "点",
      hyphen: "连字符", underscore: "下划线", apostrophe: "撇号", plus: "加号"
    }
  };
  var GLYPHS = {
    shift: "⇧", caps: "⇪", backspace: "⌫", space: "␣", enter: "↵", accents: "àé", letters: "abc",
    hide: "⌨▾", close: "✕"
  };
  var PUNCTUATION = { "@": "at", ".": "dot", "-": "hyphen", "_": "underscore", "'": "apostrophe", "+": "plus" };

  // Long press on a letter: its Latin variants, the common European ones first, then Vietnamese.
  var VARIANTS = {
    a: "àáâäãåæāăąảạằắẳẵặầấẩẫậ", c: "çćčĉċ", d: "ďđð", e: "èéêëēėęěĕẻẽẹềếểễệ", g: "ğĝġģ", h: "ĥħ",
    i: "ìíîïīįıİĩỉịĭ", j: "ĵ", k: "ķ", l: "łľĺļŀ", n: "ñńňņ", o: "òóôöõøōőœŏơỏọồốổỗộờớởỡợ", r: "řŕŗ",
    s: "şșšśŝß", t: "țţťþŧ", u: "ùúûüūůűųŭũưủụừứửữự", w: "ŵ", y: "ýÿŷỳỷỹỵ", z: "źżž"
  };

  function fn(kind, units, extra) { return { kind: kind, units: units || 1, extra: extra || [] }; }
  function ch(text, units, extra) { return { kind: "char", ch: text, units: units || 1, extra: extra || [] }; }
  function chars(text) { return Array.from(text); }

  var ROW_DIGITS = chars("1234567890").concat(["'", fn("backspace", 2.5)]);
  var ROW_TOP = chars("qwertyuiıopğü");
  var ROW_HOME = [fn("caps", 1.5)].concat(chars("asdfghjklşéë"));
  var ROW_BOTTOM = [fn("shift", 2.5)].concat(chars("zxcvbnmçöóï"));
  var LAYOUTS = {
    letters: [ROW_DIGITS, ROW_TOP, ROW_HOME, ROW_BOTTOM,
      [fn("accents", 1.5), "@", "_", "-", fn("space", 4), ".", "+", fn("enter", 2), fn("hide")]],
    email: [ROW_DIGITS, ROW_TOP, ROW_HOME, ROW_BOTTOM,
      [fn("accents", 1.5), "_", "-", "+", ch("@", 2.5, ["prominent"]), ch(".", 2.5, ["prominent"]),
        fn("enter", 2), fn("hide")]],
    accents: [chars("àáâãäåæāăąçćčď"), chars("đèéêëēėęěğìíîï"), chars("īįıİłľñńňòóôõö"),
      chars("őøœřśšşșßťțùúû"),
      [fn("letters", 1.5), fn("shift", 1.5)].concat(chars("üűūůųýÿźżž"), [fn("backspace", 1.5)])],
    numpad: [["1", "2", "3", fn("backspace")], ["4", "5", "6", "+"], ["7", "8", "9", fn("space")],
      [fn("hide"), "0", fn("enter", 2)]]
  };

  var root = document.documentElement;
  var L = L10N[primaryTag(root.lang)] || L10N.en;
  var specs = new WeakMap(); // button -> what it does
  var kb, strip, layouts = {};

  var target = null;        // the field being typed into
  var base = "letters";     // its layout (letters, email or numpad)
  var current = null;       // the layout on screen
  var locale;               // for Shift: "i" -> "İ" in Turkish
  var shift = false;
  var caps = false;
  var valueAtFocus = "";
  var manualEdits = false;  // edits by the fallback path, which the browser does not count for change
  var pressed = null;       // the key under the finger
  var handled = false;      // this press was acted on at pointerdown or by a long press: ignore its click
  var longTimer = 0, repeatDelay = 0, repeatTimer = 0, hideTimer = 0;

  function primaryTag(tag) {
    var primary = String(tag || "").toLowerCase().split(/[-_]/)[0];
    return /^[a-z]{2,3}$/.test(primary) ? primary : "";
  }

  function isLetter(text) { return text.toLowerCase() !== text.toUpperCase(); }

  function upper(text) {
    var up;
    try { up = text.toLocaleUpperCase(locale); } catch (err) { up = text.toUpperCase(); }
    return Array.from(up).length === 1 ? up : text; // ß stays ß rather than becoming "SS"
  }

  // --- building -------------------------------------------------------------------------------

  function makeKey(item) {
    var spec = typeof item === "string" ? ch(item) : item;
    var button = document.createElement("button");
    button.type = "button";
    button.tabIndex = -1;
    button.className = "osk-key";
    if (spec.units !== 1) { button.classList.add("osk-u" + String(spec.units).replace(".", "")); }
    spec.extra.forEach(function (name) { button.classList.add("osk-key--" + name); });
    if (spec.kind === "char") {
      button.textContent = spec.ch;
      if (PUNCTUATION[spec.ch]) { button.setAttribute("aria-label", L[PUNCTUATION[spec.ch]]); }
      if (VARIANTS[spec.ch]) {
        spec = { kind: "char", ch: spec.ch, units: spec.units, extra: spec.extra, variants: chars(VARIANTS[spec.ch]) };
        button.classList.add("osk-key--has-variants");
      }
    } else {
      button.classList.add("osk-key--fn", "osk-key--" + spec.kind);
      button.textContent = GLYPHS[spec.kind];
      button.setAttribute("aria-label", L[spec.kind] || L.done);
      if (spec.kind === "shift" || spec.kind === "caps") { button.setAttribute("aria-pressed", "false"); }
    }
    specs.set(button, spec);
    return button;
  }

  function build() {
    kb = document.createElement("div");
    kb.className = "osk";
    kb.setAttribute("role", "group");
    kb.setAttribute("aria-label", L.keyboard);
    kb.hidden = true;
    strip = document.createElement("div");
    strip.className = "osk-variants";
    strip.setAttribute("role", "group");
    strip.setAttribute("aria-label", L.variants);
    strip.hidden = true;
    kb.appendChild(strip);
    Object.keys(LAYOUTS).forEach(function (name) {
      var layout = document.createElement("div");
      layout.className = "osk-layout osk-layout--" + name;
      layout.dataset.layout = name;
      layout.hidden = true;
      LAYOUTS[name].forEach(function (row) {
        var line = document.createElement("div");
        line.className = "osk-row";
        row.forEach(function (item) { line.appendChild(makeKey(item)); });
        layout.appendChild(line);
      });
      layouts[name] = layout;
      kb.appendChild(layout);
    });
    document.body.appendChild(kb);
  }

  // --- which fields, which layout -------------------------------------------------------------

  function eligible(el) {
    if (!el || !(el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement)) { return false; }
    if (el instanceof HTMLInputElement && !TEXT_TYPES.has(el.type)) { return false; }
    if (el.disabled || el.readOnly || el.closest("[data-osk='off']")) { return false; }
    return (el.getAttribute("inputmode") || "").toLowerCase() !== "none";
  }

  function layoutFor(el) {
    var mode = (el.getAttribute("inputmode") || "").toLowerCase();
    if (mode === "tel" || mode === "numeric") { return "numpad"; }
    if (mode === "email") { return "email"; }
    if (mode === "text" || mode === "search" || mode === "url" || el instanceof HTMLTextAreaElement) { return "letters"; }
    if (el.type === "tel") { return "numpad"; }
    return el.type === "email" ? "email" : "letters";
  }

  function autocap(el) {
    if (base !== "letters") { return ""; }
    var value = el.getAttribute("autocapitalize") || (el.form && el.form.getAttribute("autocapitalize")) || "";
    value = value.toLowerCase();
    return value === "on" ? "sentences" : value;
  }

  function selectionOf(el) {
    try {
      if (typeof el.selectionStart !== "number") { return null; } // type=email has no selection API
      return [el.selectionStart, el.selectionEnd];
    } catch (err) {
      return null;
    }
  }

  function autoShift(el) {
    var mode = autocap(el);
    if (mode === "characters") { return true; }
    if (mode !== "words" && mode !== "sentences") { return false; }
    var range = selectionOf(el);
    var before = el.value.slice(0, range ? range[0] : el.value.length);
    if (mode === "words") { return before === "" || /\s$/.test(before); }
    return /^\s*$/.test(before) || /[.!?]\s+$/.test(before);
  }

  // --- showing and hiding ----------------------------------------------------------------------

  function show(el) {
    if (target && target !== el) { leave(target); }
    target = el;
    valueAtFocus = el.value;
    manualEdits = false;
    var owner = el.closest("[lang]");
    locale = primaryTag(owner ? owner.lang : root.lang) || undefined;
    base = layoutFor(el);
    caps = false;
    shift = autoShift(el);
    showLayout(base);
    kb.hidden = false;
    root.classList.add("osk-open");
    ensureVisible(el);
  }

  function hide() {
    window.clearTimeout(hideTimer);
    release();
    closeVariants();
    if (target) { leave(target); }
    target = null;
    kb.hidden = true;
    root.classList.remove("osk-open");
  }

  // The browser does not fire change for the fallback path's edits; do it as it would on blur.
  function leave(el) {
    if (manualEdits && el.value !== valueAtFocus) {
      manualEdits = false;
      valueAtFocus = el.value;
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function showLayout(name) {
    current = name;
    Object.keys(layouts).forEach(function (key) { layouts[key].hidden = key !== name; });
    closeVariants();
    relabel();
  }

  function relabel() {
    var up = caps || shift;
    var enterName = !target ? L.done
      : target instanceof HTMLTextAreaElement ? L.newline : (nextField(target) ? L.next : L.done);
    kb.querySelectorAll(".osk-key").forEach(function (button) {
      var spec = specs.get(button);
      if (!spec) { return; }
      if (spec.kind === "char" && isLetter(spec.ch)) {
        button.textContent = up ? upper(spec.ch) : spec.ch;
      } else if (spec.kind === "shift") {
        button.setAttribute("aria-pressed", String(shift && !caps));
      } else if (spec.kind === "caps") {
        button.setAttribute("aria-pressed", String(caps));
      } else if (spec.kind === "enter") {
        button.setAttribute("aria-label", enterName);
      }
    });
  }

  // Scroll the page so the field (and its label, if just above) sits above the docked keyboard.
  function ensureVisible(el) {
    var margin = 8;
    var keyboardTop = kb.getBoundingClientRect().top;
    var box = el.getBoundingClientRect();
    var top = box.top;
    var label = el.labels && el.labels[0];
    if (label) {
      var labelBox = label.getBoundingClientRect();
      if (labelBox.bottom <= box.top + 2 && box.top - labelBox.top < 120) { top = labelBox.top; }
    }
    var bottom = Math.min(box.bottom, box.top + 160); // a tall textarea: its first lines
    var delta = 0;
    if (bottom > keyboardTop - margin) {
      delta = bottom - (keyboardTop - margin);
    } else if (top < margin) {
      delta = top - margin;
    }
    if (delta) { window.scrollBy({ top: delta, behavior: "instant" }); }
  }

  // --- editing ---------------------------------------------------------------------------------

  function fire(el, type, inputType, data, cancelable) {
    return el.dispatchEvent(new InputEvent(type, {
      bubbles: true, composed: true, cancelable: cancelable, inputType: inputType, data: data
    }));
  }

  function execute(command, text) {
    if (document.activeElement !== target || typeof document.execCommand !== "function") { return false; }
    try {
      return document.execCommand(command, false, text) === true;
    } catch (err) {
      return false;
    }
  }

  function insert(text) {
    var el = target;
    if (document.activeElement !== el) { el.focus({ preventScroll: true }); }
    var range = selectionOf(el);
    var max = el.maxLength;
    if (max >= 0 && el.value.length - (range ? range[1] - range[0] : 0) + text.length > max) { return false; }
    var before = el.value;
    if (!execute("insertText", text) && fire(el, "beforeinput", "insertText", text, true)) {
      if (range) {
        el.setRangeText(text, range[0], range[1], "end");
      } else {
        el.value = before + text;
      }
      manualEdits = true;
      fire(el, "input", "insertText", text, false);
    }
    return el.value !== before;
  }

  function erase() {
    var el = target;
    if (document.activeElement !== el) { el.focus({ preventScroll: true }); }
    if (execute("delete")) { return; }
    var value = el.value;
    var range = selectionOf(el) || [value.length, value.length];
    var start = range[0];
    if (start === range[1]) {
      if (start === 0) { return; }
      var pair = start >= 2 && /[\uDC00-\uDFFF]/.test(value[start - 1]) && /[\uD800-\uDBFF]/.test(value[start - 2]);
      start -= pair ? 2 : 1;
    }
    if (!fire(el, "beforeinput", "deleteContentBackward", null, true)) { return; }
    if (selectionOf(el)) {
      el.setRangeText("", start, range[1], "end");
    } else {
      el.value = value.slice(0, start) + value.slice(range[1]);
    }
    manualEdits = true;
    fire(el, "input", "deleteContentBackward", null, false);
  }

  function refuse(button) {
    if (!button) { return; }
    button.classList.remove("osk-key--refused");
    void button.offsetWidth; // restart the animation
    button.classList.add("osk-key--refused");
    window.setTimeout(function () { button.classList.remove("osk-key--refused"); }, 300);
  }

  function type(text, button) {
    if (!insert(text)) { refuse(button); }
    if (target) {
      shift = autoShift(target);
      relabel();
    }
  }

  // --- Enter: next field, or submit like Enter does ---------------------------------------------

  function visible(el) {
    return el.getClientRects().length > 0 && window.getComputedStyle(el).visibility === "visible";
  }

  function isField(el) {
    if (el.matches(":disabled") || el.tabIndex < 0 || el.closest(".osk")) { return false; }
    if (el instanceof HTMLInputElement) {
      if (NOT_FIELDS.has(el.type) || (TEXT_TYPES.has(el.type) && el.readOnly)) { return false; }
    } else if (!(el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement) || el.readOnly) {
      return false;
    }
    return visible(el);
  }

  function nextField(el) {
    var scope = Array.from(el.form ? el.form.elements : document.querySelectorAll("input, select, textarea"));
    return scope.slice(scope.indexOf(el) + 1).find(isField) || null;
  }

  function isSubmitButton(el) {
    return (el instanceof HTMLButtonElement && el.type === "submit") ||
      (el instanceof HTMLInputElement && (el.type === "submit" || el.type === "image"));
  }

  function enter() {
    var el = target;
    if (el instanceof HTMLTextAreaElement) { type("\n", null); return; }
    var next = nextField(el);
    if (next) { next.focus(); return; }
    var form = el.form;
    if (form) {
      var controls = Array.from(form.elements);
      var button = controls.find(isSubmitButton);
      if (button) {
        if (!button.matches(":disabled")) { button.click(); } // what Enter does: the default button
        return;
      }
      var blockers = controls.filter(function (c) { return c instanceof HTMLInputElement && IMPLICIT_BLOCKERS.has(c.type); });
      if (blockers.length <= 1) { form.requestSubmit(); return; }
    }
    el.blur();
    hide();
  }

  // --- long press: the strip of variants --------------------------------------------------------

  function openVariants(spec) {
    strip.textContent = "";
    spec.variants.forEach(function (variant) { strip.appendChild(makeKey(variant)); });
    strip.appendChild(makeKey(fn("close")));
    strip.hidden = false;
    relabel();
  }

  function closeVariants() {
    if (strip && !strip.hidden) {
      strip.hidden = true;
      strip.textContent = "";
    }
  }

  // --- keys --------------------------------------------------------------------------------------

  function act(spec, button) {
    if (!target) { return; }
    if (!target.isConnected) { hide(); return; }
    switch (spec.kind) {
      case "char": {
        var fromStrip = strip.contains(button);
        type((caps || shift) && isLetter(spec.ch) ? upper(spec.ch) : spec.ch, button);
        if (fromStrip) { closeVariants(); }
        if (current === "accents" && target) { showLayout(base); } // one accent, then back to letters
        break;
      }
      case "space": type(" ", button); break;
      case "backspace":
        erase();
        shift = autoShift(target);
        relabel();
        break;
      case "shift":
        if (caps) { caps = false; shift = false; } else { shift = !shift; }
        relabel();
        break;
      case "caps":
        caps = !caps;
        shift = false;
        relabel();
        break;
      case "enter": enter(); break;
      case "accents": showLayout("accents"); break;
      case "letters": showLayout(base); break;
      case "close": closeVariants(); break;
      case "hide":
        target.blur();
        hide();
        break;
      default: break;
    }
  }

  function keyOf(node) {
    var button = node instanceof Element ? node.closest(".osk-key") : null;
    return button && kb.contains(button) ? button : null;
  }

  function startRepeat() {
    repeatDelay = window.setTimeout(function () {
      repeatTimer = window.setInterval(function () {
        if (!target || !target.value) { release(); return; }
        act({ kind: "backspace" }, null);
      }, REPEAT_EVERY_MS);
    }, REPEAT_DELAY_MS);
  }

  function release() {
    if (pressed) { pressed.classList.remove("osk-key--down"); }
    pressed = null;
    window.clearTimeout(longTimer);
    window.clearTimeout(repeatDelay);
    window.clearInterval(repeatTimer);
  }

  function onPointerDown(event) {
    event.preventDefault(); // keep the focus, and the caret, in the field
    handled = false;
    release();
    var button = keyOf(event.target);
    if (!button || event.button > 0) { return; }
    var spec = specs.get(button);
    pressed = button;
    button.classList.add("osk-key--down");
    if (!strip.contains(button)) { closeVariants(); }
    if (spec.kind === "backspace") {
      handled = true;
      act(spec, button);
      startRepeat();
    } else if (spec.variants) {
      longTimer = window.setTimeout(function () {
        handled = true; // the release may land on the strip that opens under the finger
        openVariants(spec);
      }, LONG_PRESS_MS);
    }
  }

  function onClick(event) {
    if (handled) { handled = false; return; } // a click without a press (assistive tech) is never swallowed
    var button = keyOf(event.target);
    if (button) { act(specs.get(button), button); }
  }

  // --- wiring ------------------------------------------------------------------------------------

  function onFocusIn(event) {
    if (eligible(event.target)) {
      window.clearTimeout(hideTimer);
      if (event.target !== target || kb.hidden) { show(event.target); }
    } else if (!kb.contains(event.target)) {
      hide();
    }
  }

  function onFocusOut(event) {
    if (event.target !== target) { return; }
    leave(target);
    window.clearTimeout(hideTimer);
    hideTimer = window.setTimeout(function () {
      var active = document.activeElement;
      if (eligible(active)) {
        if (active !== target) { show(active); }
      } else {
        hide();
      }
    }, 0);
  }

  function start() {
    build();
    kb.addEventListener("pointerdown", onPointerDown);
    kb.addEventListener("mousedown", function (event) { event.preventDefault(); });
    kb.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    kb.addEventListener("click", onClick);
    window.addEventListener("pointerup", release, true);
    window.addEventListener("pointercancel", release, true);
    window.addEventListener("blur", release);
    document.addEventListener("focusin", onFocusIn);
    document.addEventListener("focusout", onFocusOut);
    if (eligible(document.activeElement)) { show(document.activeElement); }
  }

  window.kioskKeyboard = Object.freeze({
    hide: function () { if (target) { target.blur(); } hide(); },
    get element() { return kb; },
    get target() { return target; }
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
