// The web chat page: talks to the sopagent API on this origin. Every text is shown with textContent
// (never parsed as HTML). Settings come from the URL fragment, which is never sent to a server:
//   /chat#key=BROWSER_KEY&policy=POLICY[&title=TITLE][&language=de]
(() => {
  "use strict";
  const WORDS = {
    en: {
      you: "You", assistant: "Assistant", team: "Support team", send: "Send", message: "Your message",
      placeholder: "Type your message", hint: "Press Enter to send, Shift+Enter for a new line.",
      connecting: "Connecting…", connected: "Connected", connectedTeam: "Connected to our team",
      sending: "Sending…", retrying: "Retrying…", reconnecting: "Reconnecting…",
      notSetUp: "This chat is not set up: its address needs #key=…&policy=…",
      unavailable: "The chat is unavailable: ", notSent: "Your message could not be sent: ",
      passed: "Your message was passed to our team.",
      escalated: "A member of our team will take over this conversation.",
      ended: "This conversation has ended. Reload the page to start a new one.", endedState: "Conversation ended",
      log: "Conversation",
    },
    de: {
      you: "Sie", assistant: "Assistent", team: "Kundenservice", send: "Senden", message: "Ihre Nachricht",
      placeholder: "Nachricht eingeben", hint: "Enter sendet, Umschalt+Enter beginnt eine neue Zeile.",
      connecting: "Verbinde…", connected: "Verbunden", connectedTeam: "Mit unserem Team verbunden",
      sending: "Wird gesendet…", retrying: "Neuer Versuch…", reconnecting: "Verbindung wird wiederhergestellt…",
      notSetUp: "Dieser Chat ist nicht eingerichtet: seine Adresse braucht #key=…&policy=…",
      unavailable: "Der Chat ist nicht erreichbar: ", notSent: "Ihre Nachricht konnte nicht gesendet werden: ",
      passed: "Ihre Nachricht wurde an unser Team weitergegeben.",
      escalated: "Eine Kollegin oder ein Kollege übernimmt dieses Gespräch.",
      ended: "Dieses Gespräch ist beendet. Laden Sie die Seite neu, um ein neues zu beginnen.",
      endedState: "Gespräch beendet", log: "Gespräch",
    },
  };
  const SETTINGS = "sopagent-chat-settings";  // the fragment leaves the address bar; a reload finds it here
  let fragment = location.hash.slice(1);
  try {
    if (fragment) sessionStorage.setItem(SETTINGS, fragment);
    else fragment = sessionStorage.getItem(SETTINGS) || "";
  } catch (error) {
    // storage refused (private mode): a reload then needs the address again
  }
  const settings = new URLSearchParams(fragment);
  const browserKey = settings.get("key");
  const policy = settings.get("policy");
  const language = settings.get("language");
  const words = WORDS[(language || "en").split(/[-_]/)[0]] || WORDS.en;
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

  if (language) document.documentElement.lang = language;
  document.querySelector("label[for=message]").textContent = words.message;
  input.placeholder = words.placeholder;
  sendButton.textContent = words.send;
  document.getElementById("composer-hint").textContent = words.hint;
  list.setAttribute("aria-label", words.log);
  state.textContent = words.connecting;
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
    show("notice", words.ended);
    setState(words.endedState);
    setComposer(false);
  }

  const STORED = "sopagent-chat:" + policy;  // this tab's conversation, kept across reloads

  async function resume() {
    let saved;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORED) || "null");
    } catch (error) {
      saved = null;
    }
    if (!saved || !saved.id || !saved.key) return false;
    let transcript;
    try {
      transcript = await api("/v1/conversations/" + encodeURIComponent(saved.id) + "/transcript", saved.key);
    } catch (error) {
      transcript = null;
    }
    if (!transcript || transcript.ended) {  // gone, or over: a reload starts a new conversation
      sessionStorage.removeItem(STORED);
      return false;
    }
    conversation = saved;
    let lastAssistant = null;
    for (const line of transcript.lines) {
      const who = { customer: words.you, assistant: words.assistant, operator: words.team }[line.speaker];
      const item = show(line.speaker === "assistant" ? "agent" : line.speaker, line.text, who);
      if (line.speaker === "assistant") lastAssistant = item;
    }
    operatorAfter = transcript.after;
    if (transcript.pending_decision_id && lastAssistant) {
      lastAssistant.classList.add("held");
      lastAssistant.setAttribute("aria-busy", "true");
      waitForApproval(new URL("/v1/decisions/" + transcript.pending_decision_id + "/delivery", location.href),
                      lastAssistant);
    }
    return true;
  }

  async function start() {
    if (!browserKey || !policy) {
      setState(words.notSetUp);
      return;
    }
    if (!(await resume())) {
      try {
        const body = language ? { policy, language } : { policy };
        const started = await api("/v1/conversations", browserKey, { method: "POST", body: JSON.stringify(body) });
        conversation = { id: started.conversation_id, key: started.conversation_key };
      } catch (error) {
        setState(words.unavailable + error.message);
        return;
      }
      try {
        sessionStorage.setItem(STORED, JSON.stringify(conversation));
      } catch (error) {
        // storage refused (private mode): the conversation still works, it is only not kept across reloads
      }
    }
    setState(words.connected);
    setComposer(true);
    watchOperatorReplies();
  }

  async function send(text) {
    show("customer", text, words.you);
    waiting = true;
    setComposer(false);
    setState(words.sending);
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
          show("notice", words.notSent + error.message);
          break;
        }
        setState(words.retrying);
        await pause(error.retryAfter || 2);
      }
    }
    waiting = false;
    if (!ended) setState(words.connected);
    setComposer(true);
  }

  function showReply(reply) {
    if (reply.status === "received") {
      show("notice", words.passed);
    } else if (reply.status === "pending") {
      const held = show("agent", reply.reply, words.assistant);
      held.classList.add("held");
      held.setAttribute("aria-busy", "true");
      waitForApproval(new URL(reply.delivery_url, location.href), held);
    } else {
      show("agent", reply.reply, words.assistant);
      if (reply.status === "escalated") show("notice", words.escalated);
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
      if (delivery.state === "escalate") show("notice", words.escalated);
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
        if (!waiting) setState(words.reconnecting);
        await pause(error.retryAfter || 3);
        continue;
      }
      if (!waiting && !ended) setState(answer.status === "taken_over" ? words.connectedTeam : words.connected);
      for (const reply of answer.replies) {
        if (reply.text) show("operator", reply.text, words.team);
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
