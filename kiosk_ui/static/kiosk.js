/* Kiosk behaviour on top of plain HTML pages: live updates (SSE) and the idle reset.
   No flow depends on this file; without it every page and form still works. */
(function () {
  "use strict";
  var body = document.body;

  // Live updates: a tap or member scan takes the screen to the welcome page.
  // EventSource retries on its own after a dropped connection, but gives up for good after an HTTP
  // error (a restarting node answers 503): reopen it then, so the screen never stays deaf to taps.
  function listen(handlers) {
    var source = null;
    var open = function () {
      source = new EventSource("/events");
      Object.keys(handlers).forEach(function (name) { source.addEventListener(name, handlers[name]); });
      source.addEventListener("error", function () {
        if (source.readyState === EventSource.CLOSED) { window.setTimeout(open, 3000); }
      });
    };
    open();
    window.addEventListener("pagehide", function () { if (source) { source.close(); } });
  }

  if (body.dataset.live === "navigate" && window.EventSource) {
    listen({
      identity: function () { window.location.assign("/welcome"); },
      // the till asked for the survey after a sale (receipt ids are letters, digits and "-")
      survey: function (event) {
        var data = JSON.parse(event.data);
        var receipt = data && typeof data.receipt === "string" ? data.receipt : "";
        window.location.assign("/survey" + (/^[0-9A-Za-z-]{4,48}$/.test(receipt) ? "?receipt=" + receipt : ""));
      }
    });
  }

  // Reservation form: a product scanned at the kiosk's scanner fills the product field.
  if (body.dataset.live === "product" && window.EventSource) {
    listen({ product: function (event) {
      var field = document.getElementById("product");
      var data = JSON.parse(event.data);
      if (field && data && typeof data.gtin === "string") {
        field.value = data.gtin;
        field.dispatchEvent(new Event("input", { bubbles: true }));
      }
    } });
  }

  // Idle reset: back to the attract screen, which wipes the session on the server.
  var timeout = parseInt(body.dataset.idleTimeout || "60", 10) * 1000;
  if (body.dataset.idleArmed === "1" && timeout > 0) {
    var timer = null;
    var arm = function () {
      if (timer) { window.clearTimeout(timer); }
      timer = window.setTimeout(function () { window.location.replace("/?idle=1"); }, timeout);
    };
    ["pointerdown", "keydown", "touchstart", "input"].forEach(function (name) {
      window.addEventListener(name, arm, { passive: true });
    });
    arm();
  }
})();
