// Optional comforts; every page works without them. Served as a file so that the CSP can
// forbid inline scripts.
"use strict";

// Forms with data-confirm (revoke, resend) ask first.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// Buttons with data-copy="ID" copy that element's text (the new key).
document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("[data-copy]");
  if (!button || !navigator.clipboard) {
    return;
  }
  const source = document.getElementById(button.dataset.copy);
  if (source) {
    navigator.clipboard.writeText(source.textContent.trim()).then(() => {
      button.textContent = "Copied";
    });
  }
});
