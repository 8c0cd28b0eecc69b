// The web chat page: talks to the sopagent API on this origin. Every text is shown with textContent
// (never parsed as HTML). Settings come from the URL fragment, which is never sent to a server:
//   /chat#key=BROWSER_KEY&policy=POLICY[&title=TITLE]
(() => {
  "use strict";
  const settings = new URLSearchParams(location.hash.slice(1));
  const browserKey = settings.get("key");
  const policy = settings.get("policy");
  const list = document.getElementById("messages");
  const state = document.getElementById("chat-state");
  const form = document.getElementById("composer");
  const input = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const LONG_POLL_S = 25;
  let conversation = null;  // {id, key}
  let ended = false;
  let operatorAfter = 0;
  let waiting = false;

  if (settings.get("title")) {
    document.getElementById("chat-title").textContent = settings.get("title");
    document.title = settings.get("title");
  }
  history.replaceState(null, "", location.pathname);  // the key leaves the address bar

  class ApiError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function api(path, key, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json", ...(options.headers || {}) },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ApiError(response.status, body.error || response.statusText,
                         Number(response.headers.get("Retry-After") || 0));
    }
    return body;
  }

  const pause = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

  function show(kind, text, who) {
    const item = document.createElement("li");
    item.className = kind === "notice" ? "notice" : "message from-" + kind;
    if (who) {
      const label = document.createElement("span");
      label.className = "who";
      label.textContent = who;
      item.append(label);
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(body);
    list.append(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function setState(text) {
    state.textContent = text;
  }

  function setComposer(enabled) {
    input.disabled = !enabled || ended;
    sendButton.disabled = !enabled || ended;
    if (enabled && !ended) input.focus();
  }

  function finish() {
    if (ended) return;
    ended = true;
    show("notice", "This conversation has ended. Reload the page to start a new one.");
    setState("Conversation ended");
    setComposer(false);
  }

  async function start() {
    if (!browserKey || !policy) {
      setState("This chat is not set up: its address needs #key=…&policy=…");
      return;
    }
    try {
      const started = await api("/v1/conversations", browserKey, { method: "POST", body: JSON.stringify({ policy }) });
      conversation = { id: started.conversation_id, key: started.conversation_key };
    } catch (error) {
      setState("The chat is unavailable: " + error.message);
      return;
    }
    setState("Connected");
    setComposer(true);
    watchOperatorReplies();
  }

  async function send(text) {
    show("customer", text, "You");
    waiting = true;
    setComposer(false);
    setState("Sending…");
    const path = "/v1/conversations/" + encodeURIComponent(conversation.id) + "/messages";
    const idempotencyKey = crypto.randomUUID();
    for (let attempt = 0; ; attempt++) {
      try {
        const reply = await api(path, conversation.key, {
          method: "POST", headers: { "Idempotency-Key": idempotencyKey }, body: JSON.stringify({ text }),
        });
        showReply(reply);
        break;
      } catch (error) {
        const retry = error.status === 429 || error.status === 503 || error.status === undefined;
        if (!retry || attempt >= 3) {
          show("notice", "Your message could not be sent: " + error.message);
          break;
        }
        setState("Retrying…");
        await pause(error.retryAfter || 2);
      }
    }
    waiting = false;
    if (!ended) setState("Connected");
    setComposer(true);
  }

  function showReply(reply) {
    if (reply.status === "received") {
      show("notice", "Your message was passed to our team.");
    } else if (reply.status === "pending") {
      const held = show("agent", reply.reply, "Assistant");
      held.classList.add("held");
      held.setAttribute("aria-busy", "true");
      waitForApproval(new URL(reply.delivery_url, location.href), held);
    } else {
      show("agent", reply.reply, "Assistant");
      if (reply.status === "escalated") show("notice", "A member of our team will take over this conversation.");
    }
    if (reply.ended) finish();
  }

  async function waitForApproval(url, held) {
    url.searchParams.set("wait", String(LONG_POLL_S));
    for (;;) {
      let delivery;
      try {
        delivery = await api(url.pathname + url.search, conversation.key);
      } catch (error) {
        await pause(error.retryAfter || 3);
        continue;
      }
      if (delivery.state === "pending") continue;
      held.classList.remove("held");
      held.setAttribute("aria-busy", "false");
      if (delivery.text) {  // the holding reply turns into the approved one
        held.querySelector(".text").textContent = delivery.text;
        held.classList.add("approved");
      }
      if (delivery.state === "escalate") show("notice", "A member of our team will take over this conversation.");
      return;
    }
  }

  async function watchOperatorReplies() {
    const path = "/v1/conversations/" + encodeURIComponent(conversation.id) + "/operator-replies";
    while (!ended) {
      let answer;
      try {
        answer = await api(path + "?after=" + operatorAfter + "&wait=" + LONG_POLL_S, conversation.key);
      } catch (error) {
        if (!waiting) setState("Reconnecting…");
        await pause(error.retryAfter || 3);
        continue;
      }
      if (!waiting && !ended) setState(answer.status === "taken_over" ? "Connected to our team" : "Connected");
      for (const reply of answer.replies) {
        if (reply.text) show("operator", reply.text, "Support team");
      }
      operatorAfter = answer.after;
      if (answer.status === "closed") finish();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !conversation || ended || waiting) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  start();
})();
