/* Kiosk behaviour on top of plain HTML pages: live updates (SSE) and the idle reset.
   No flow depends on this file; without it every page and form still works. */
(function () {
  "use strict";
  var body = document.body;

  // Live updates: a tap or member scan takes the screen to the welcome page.
  if (body.dataset.live === "navigate" && window.EventSource) {
    var source = new EventSource("/events");
    source.addEventListener("identity", function () {
      window.location.assign("/welcome");
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  // Reservation form: a product scanned at the kiosk's scanner fills the product field.
  if (body.dataset.live === "product" && window.EventSource) {
    var products = new EventSource("/events");
    products.addEventListener("product", function (event) {
      var field = document.getElementById("product");
      var data = JSON.parse(event.data);
      if (field && data && typeof data.gtin === "string") {
        field.value = data.gtin;
        field.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });
    window.addEventListener("pagehide", function () { products.close(); });
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
