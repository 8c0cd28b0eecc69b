// Embeds the sopagent web chat in any page with one tag:
//   <script src="https://chat.bank.example/chat/widget.js" data-key="BROWSER_KEY" data-policy="card_services"
//           data-label="Chat with us" data-title="Card services" data-language="en" async></script>
// A button opens the chat in a frame served by sopagent (its own origin and Content-Security-Policy);
// the conversation starts only when the visitor opens it. The page must be listed in `sopagent serve
// --chat-origin`.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const chatOrigin = new URL(script.src).origin;
  const label = script.dataset.label || "Chat with us";
  const title = script.dataset.title || "Support chat";
  const frameId = "sopagent-chat-" + Math.random().toString(36).slice(2);
  let frame = null;

  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", frameId);
  Object.assign(button.style, {
    position: "fixed", right: "1rem", bottom: "1rem", zIndex: "2147483000", font: "600 16px system-ui, sans-serif",
    padding: "0.7rem 1.1rem", border: "0", borderRadius: "999px", background: "#0b4f9c", color: "#ffffff",
    cursor: "pointer", boxShadow: "0 2px 8px rgba(0,0,0,0.25)",
  });

  function open() {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.id = frameId;
      frame.title = title;
      const settings = new URLSearchParams({ key: script.dataset.key || "", policy: script.dataset.policy || "", title });
      if (script.dataset.language) settings.set("language", script.dataset.language);
      frame.src = chatOrigin + "/chat#" + settings.toString();
      Object.assign(frame.style, {
        position: "fixed", right: "1rem", bottom: "4.5rem", zIndex: "2147483000", width: "min(24rem, calc(100vw - 2rem))",
        height: "min(38rem, calc(100vh - 6rem))", border: "1px solid #c9d1da", borderRadius: "0.75rem",
        background: "#ffffff", boxShadow: "0 4px 16px rgba(0,0,0,0.25)",
      });
      document.body.append(frame);
    }
    frame.hidden = false;
    button.setAttribute("aria-expanded", "true");
    frame.focus();
  }

  function close() {
    frame.hidden = true;
    button.setAttribute("aria-expanded", "false");
  }

  button.addEventListener("click", () => (frame && !frame.hidden ? close() : open()));
  document.body.append(button);
})();
