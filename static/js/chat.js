// Chat page enhancement. No framework, no build step.
//
// The composer is a plain form that works without JavaScript (the server runs
// the turn and redirects back). With JavaScript it posts the turn to the JSON
// API instead and reads the answer as Server-Sent Events: each answering
// agent gets a bubble that fills with plain text as tokens arrive; when the
// final `turn` event comes, the bubbles are replaced by the turn exactly as
// the server renders it (GET /rooms/<room>/turns/<id>/: Markdown, costs,
// tools). The page never renders a finished turn itself and never does
// arithmetic on credits: figures are shown as the server sent them.
(function () {
  "use strict";

  var form = document.getElementById("composer");
  // Without streaming fetch the plain form posts as it would without JavaScript.
  if (!form || !window.fetch || !window.ReadableStream || !window.TextDecoder) return;

  var textarea = document.getElementById("composer-content");
  var modelSelect = document.getElementById("composer-model");
  var fileInput = document.getElementById("composer-files");
  var button = document.getElementById("composer-send");
  var buttonLabel = button.querySelector(".button__label");
  var spinner = button.querySelector(".spinner");
  var stopButton = document.getElementById("composer-stop");
  var statusBox = document.getElementById("composer-status");
  var errorBox = document.getElementById("composer-error");
  var conversation = document.getElementById("conversation");
  var turnsUrl = form.dataset.turnsUrl;
  var cancelUrl = form.dataset.cancelUrl;
  var fragmentsUrl = form.dataset.fragmentsUrl;
  var filesUrl = form.dataset.filesUrl;
  var maxFiles = parseInt(form.dataset.maxFiles || "5", 10);
  var csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  var busy = false;
  // The submission being attempted. It keeps its Idempotency-Key (and its
  // uploaded file ids) until it is answered or the user changes what they send,
  // so pressing Send again after a failure can never charge twice.
  var pending = null;
  // The turn on screen while it streams (its placeholder article and bubbles).
  var run = null;

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues does not.
    var bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setBusy(on, label) {
    busy = on;
    button.disabled = on;
    button.setAttribute("aria-disabled", on ? "true" : "false");
    form.setAttribute("aria-busy", on ? "true" : "false");
    spinner.hidden = !on;
    buttonLabel.textContent = on ? (label || "Sending…") : "Send";
    if (!on) showStop(false);
  }

  function showStop(on) {
    stopButton.hidden = !on;
    stopButton.disabled = false;
    stopButton.textContent = "Stop";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function detailText(detail) {
    if (detail === null || detail === undefined) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map(detailText).join(" ");
    if (typeof detail === "object") {
      return Object.keys(detail).map(function (key) {
        var text = detailText(detail[key]);
        return key === "non_field_errors" || key === "detail" ? text : key + ": " + text;
      }).join(" ");
    }
    return String(detail);
  }

  // A readable sentence for every refusal before the stream starts; never a stack trace or raw HTML.
  function errorMessage(status, body) {
    var detail = body ? detailText(body.detail) : "";
    switch (status) {
      case 400: return "That message could not be sent: " + (detail || "check what you wrote and try again.");
      case 401:
      case 403: return "Your session has ended. Log in again, then resend your message.";
      case 402:
        // The server says how much is needed, how much is available and what to do.
        return (detail || "Not enough credits for this turn.") + " Nothing was charged.";
      case 404: return "This room no longer exists. " + (detail || "");
      case 409: return (detail || "This message is already being answered.") + " Wait a moment, then press Send again.";
      case 413: return "A file is too large to upload. " + detail;
      case 415: return "That file type is not supported. " + detail;
      case 429: return "Too many requests. Wait a moment, then press Send again.";
      case 502: return "The model provider did not answer" + (detail ? " (" + detail + ")" : "") +
        ". Nothing was charged. Press Send to try again.";
      default:
        return "Something went wrong on our side (HTTP " + status + "). Press Send to try again; you will not be charged twice.";
    }
  }

  // An `error` event names its failure by the code its JSON refusal would carry: same sentence.
  var STATUS_OF_CODE = {
    insufficient_credits: 402,
    not_found: 404,
    idempotency_key_reused: 409,
    idempotency_in_progress: 409,
    provider_error: 502,
  };

  function readJson(response) {
    return response.text().then(function (text) {
      try { return text ? JSON.parse(text) : null; } catch (e) { return null; }
    });
  }

  function fileSignature(files) {
    return Array.prototype.map.call(files, function (f) { return [f.name, f.size, f.lastModified].join(":"); }).join("|");
  }

  function uploadFiles(files) {
    var ids = [];
    var chain = Promise.resolve();
    Array.prototype.forEach.call(files, function (file, i) {
      chain = chain.then(function () {
        statusBox.textContent = "Uploading " + (i + 1) + "/" + files.length + "…";
        var data = new FormData();
        data.append("file", file, file.name);
        return fetch(filesUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrfToken, Accept: "application/json" },
          body: data,
        }).then(function (response) {
          return readJson(response).then(function (body) {
            if (!response.ok) {
              var error = new Error(file.name + ": " + errorMessage(response.status, body));
              error.handled = true;
              throw error;
            }
            ids.push(body.id);
          });
        });
      });
    });
    return chain.then(function () {
      if (!busy) statusBox.textContent = "";
      return ids;
    }, function (error) {
      if (!busy) { statusBox.textContent = ""; showError(error.message); }
      throw error;
    });
  }

  // --- Server-Sent Events over fetch: `event:`/`data:` lines, a blank line ends an event ---

  // Calls onEvent(name, data) per event until it returns true (the final event) or the stream ends.
  function readEvents(body, onEvent) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var name = "";
    var data = [];
    var finished = false;

    function line(text) {
      if (text === "") {
        if (data.length) finished = onEvent(name || "message", data.join("\n")) === true;
        name = "";
        data = [];
        return;
      }
      if (text.charAt(0) === ":") return; // a comment: the server's heartbeat
      var colon = text.indexOf(":");
      var field = colon === -1 ? text : text.slice(0, colon);
      var value = colon === -1 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }

    function feed(text) {
      buffer += text;
      // A chunk may end between the \r and \n of one line break.
      var held = buffer.slice(-1) === "\r" ? "\r" : "";
      var lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (var i = 0; i < lines.length && !finished; i++) line(lines[i]);
    }

    function pump() {
      return reader.read().then(function (chunk) {
        // At the end an event without its blank line is dropped, as EventSource does.
        if (chunk.done) return;
        feed(decoder.decode(chunk.value, { stream: true }));
        if (finished) {
          reader.cancel().catch(function () {});
          return;
        }
        return pump();
      });
    }
    return pump();
  }

  // --- the turn while it streams ---

  function startRun(content, files) {
    var article = el("article", "turn turn--pending");
    article.setAttribute("data-testid", "pending-turn");
    article.setAttribute("aria-label", "Your new message");
    article.setAttribute("aria-busy", "true");
    var mine = el("div", "bubble bubble--user");
    var head = el("div", "bubble__head");
    head.appendChild(el("span", "bubble__who", "You"));
    mine.appendChild(head);
    mine.appendChild(el("div", "bubble__body", content));
    if (files.length) {
      var list = el("ul", "bubble__files");
      list.setAttribute("aria-label", "Attached files");
      Array.prototype.forEach.call(files, function (f) { list.appendChild(el("li", "tag tag--file", f.name)); });
      mine.appendChild(list);
    }
    article.appendChild(mine);
    var answers = el("div", "answers");
    answers.setAttribute("data-testid", "streaming-answers");
    var waiting = el("p", "answers__waiting muted small", "Waiting for the agents…");
    answers.appendChild(waiting);
    article.appendChild(answers);

    var empty = document.getElementById("conversation-empty");
    if (empty) empty.remove();
    conversation.appendChild(article);
    article.scrollIntoView({ block: "nearest", behavior: prefersReducedMotion() ? "auto" : "smooth" });
    return {
      content: content, fileSignature: fileSignature(files), article: article, answers: answers, waiting: waiting,
      bubbles: Object.create(null), key: null, final: null, stopping: false,
    };
  }

  function bubbleFor(current, alias) {
    alias = String(alias || "");
    var found = current.bubbles[alias];
    if (found) return found;
    if (current.waiting) {
      current.waiting.remove();
      current.waiting = null;
    }
    var bubble = el("div", "bubble bubble--assistant bubble--streaming");
    bubble.setAttribute("data-testid", "streaming-answer");
    bubble.dataset.model = alias;
    var head = el("div", "bubble__head");
    head.appendChild(el("span", "bubble__who", alias));
    var state = el("span", "bubble__state muted small", "writing…");
    head.appendChild(state);
    bubble.appendChild(head);
    var body = el("div", "bubble__body");
    var text = document.createTextNode("");
    body.appendChild(text);
    bubble.appendChild(body);
    current.answers.appendChild(bubble);
    found = { bubble: bubble, text: text, state: state };
    current.bubbles[alias] = found;
    return found;
  }

  // Figures exactly as the server sent them (strings and integers), no arithmetic.
  function agentDone(found, data) {
    found.bubble.classList.remove("bubble--streaming");
    found.bubble.classList.add("bubble--done");
    found.state.textContent = "done · " + data.input_tokens + " in · " + data.output_tokens + " out · " +
      data.credits_burned + " credits";
  }

  function discardRun(current) {
    if (current.article.parentNode) current.article.remove();
  }

  function statusLine(turn) {
    var burned = "This turn burned " + turn.credits_burned + " credits";
    if (turn.status === "cancelled") return "Stopped. " + burned + " for what ran; balance " + turn.balance + ".";
    if (turn.status === "failed") return "Something failed. " + burned + " for what ran; balance " + turn.balance + ".";
    return "Answered. " + burned + "; balance " + turn.balance + ".";
  }

  // The final `turn` event (or a JSON 201): swap the bubbles for the server's rendering of the turn.
  function finishTurn(current, turn) {
    pending = null; // answered (or replayed): a new message gets a new key
    // Empty the composer unless the user has started on the next message meanwhile.
    if (textarea.value.trim() === current.content) textarea.value = "";
    if (fileInput && fileSignature(fileInput.files) === current.fileSignature) fileInput.value = "";
    updateBalance(turn.balance);
    return fetch(fragmentsUrl + encodeURIComponent(turn.id) + "/", {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      var template = document.createElement("template");
      template.innerHTML = html.trim();
      current.article.replaceWith(template.content);
      statusBox.textContent = statusLine(turn);
    }, function () {
      current.article.setAttribute("aria-busy", "false");
      statusBox.textContent = statusLine(turn);
      showError("The answer was saved, but it could not be shown with its costs. Reload the page to see it.");
    });
  }

  function handleEvent(current, name, text) {
    var data;
    try { data = JSON.parse(text); } catch (e) { return false; }
    if (!data || typeof data !== "object") return false;
    switch (name) {
      case "routing":
        (data.agents || []).forEach(function (alias) { bubbleFor(current, alias); });
        if (!current.stopping) statusBox.textContent = "The agents are answering…";
        return false;
      case "delta":
        bubbleFor(current, data.model_alias).text.appendData(String(data.text || ""));
        return false;
      case "agent_done":
        agentDone(bubbleFor(current, data.model_alias), data);
        return false;
      case "turn":
        current.final = finishTurn(current, data);
        return true;
      case "error":
        // Nothing was recorded: the message stays in the box, and Send retries with the same key.
        discardRun(current);
        statusBox.textContent = "";
        var status = Object.prototype.hasOwnProperty.call(STATUS_OF_CODE, data.code) ? STATUS_OF_CODE[data.code] : 0;
        showError(status ? errorMessage(status, { detail: data.message })
          : (data.message || "The answer could not be finished.") + " Press Send to try again; you will not be charged twice.");
        current.final = Promise.resolve();
        return true;
      default:
        return false;
    }
  }

  function stop() {
    var current = run;
    if (!current || !current.key || current.final || current.stopping) return;
    current.stopping = true;
    stopButton.disabled = true;
    stopButton.textContent = "Stopping…";
    statusBox.textContent = "Stopping… the agents end here, and only what ran is charged.";
    // The stream stays open: the server ends it with the cancelled turn.
    fetch(cancelUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify({ idempotency_key: current.key }),
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
    }).catch(function () {
      // Not stopped (the turn was not running yet, or the request failed): Stop can be pressed again.
      if (run === current && !current.final) {
        current.stopping = false;
        stopButton.disabled = false;
        stopButton.textContent = "Stop";
      }
    });
  }

  function updateBalance(balance) {
    if (balance === undefined || balance === null) return;
    var target = document.getElementById("header-balance");
    if (!target) return;
    target.textContent = balance;
    var pill = target.closest(".balance-pill");
    if (pill) {
      pill.classList.remove("is-updated");
      void pill.offsetWidth; // restart the highlight animation
      pill.classList.add("is-updated");
    }
  }

  function postTurn(json, key, accept) {
    return fetch(turnsUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: accept,
        "X-CSRFToken": csrfToken,
        "Idempotency-Key": key,
      },
      body: json,
    });
  }

  // --- The quote: who will answer and about what it will cost, before sending. ---
  var quoteBox = document.getElementById("composer-quote");
  var quoteUrl = form.dataset.quoteUrl;
  var quoteTimer = null;
  var quoteSeq = 0;
  // Files are uploaded when attached, so the quote can count them; Send reuses their ids.
  var attached = { signature: "", ids: Promise.resolve([]) };

  function attachedIds() {
    var files = fileInput ? fileInput.files : [];
    var signature = fileSignature(files);
    if (signature !== attached.signature) {
      attached = { signature: signature, ids: files.length ? uploadFiles(files) : Promise.resolve([]) };
      attached.ids.catch(function () { attached = { signature: "", ids: Promise.resolve([]) }; });
    }
    return attached.ids;
  }

  function showQuote(text) {
    if (!quoteBox) return;
    quoteBox.textContent = text;
    quoteBox.hidden = !text;
  }

  function quoteText(quote) {
    var who = quote.routing.upper_bound
      ? "The manager picks who answers (every agent counted)"
      : quote.routing.agents.join(" and ") + (quote.routing.agents.length > 1 ? " will answer" : " will answer");
    var cost = quote.credits_low === quote.credits_high
      ? "about " + quote.credits_low + " credits"
      : "about " + quote.credits_low + "–" + quote.credits_high + " credits";
    return who + " · " + cost + " (at most " + quote.credits_high + ")";
  }

  function refreshQuote() {
    var content = textarea.value.trim();
    if (!quoteUrl || !content) { showQuote(""); return; }
    var seq = ++quoteSeq;
    var alias = modelSelect ? modelSelect.value : "";
    attachedIds().then(function (ids) {
      var body = { content: content };
      if (alias) body.model_alias = alias;
      if (ids.length) body.files = ids;
      return fetch(quoteUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken },
        body: JSON.stringify(body),
      });
    }).then(function (response) {
      return readJson(response).then(function (data) {
        if (seq !== quoteSeq) return; // a newer quote is on its way
        if (response.ok) showQuote(quoteText(data));
        else showQuote(data && data.detail ? detailText(data.detail) : "");
      });
    }).catch(function () { if (seq === quoteSeq) showQuote(""); });
  }

  function scheduleQuote() {
    window.clearTimeout(quoteTimer);
    quoteTimer = window.setTimeout(refreshQuote, 400);
  }

  textarea.addEventListener("input", scheduleQuote);
  if (modelSelect) modelSelect.addEventListener("change", scheduleQuote);
  if (fileInput) fileInput.addEventListener("change", scheduleQuote);

  function submit() {
    if (busy) return; // a second click while a turn runs does nothing
    clearError();
    var content = textarea.value.trim();
    if (!content) {
      showError("Write a message first.");
      textarea.focus();
      return;
    }
    var files = fileInput ? fileInput.files : [];
    if (files.length > maxFiles) {
      showError("Attach at most " + maxFiles + " files.");
      return;
    }
    var alias = modelSelect ? modelSelect.value : "";
    var signature = fileSignature(files);
    setBusy(true);
    statusBox.textContent = "Sending…";
    var current = run = startRun(content, files);

    var fileIds = pending && pending.content === content && pending.alias === alias && pending.fileSignature === signature
      ? Promise.resolve(pending.fileIds)
      : attachedIds();

    fileIds.then(function (ids) {
      var body = { content: content };
      if (alias) body.model_alias = alias;
      if (ids.length) body.files = ids;
      var json = JSON.stringify(body);
      if (!pending || pending.json !== json) {
        pending = { key: newKey(), json: json, content: content, alias: alias, fileSignature: signature, fileIds: ids };
      }
      current.key = pending.key;
      setBusy(true, "Thinking…");
      showStop(true);
      statusBox.textContent = "Waiting for the agents…";
      var key = pending.key;
      return postTurn(json, key, "text/event-stream").then(function (response) {
        // A server that cannot stream yet (mid-deploy) refuses the event stream before running
        // anything: ask it for the JSON answer instead, under the same key.
        return response.status === 406 ? postTurn(json, key, "application/json") : response;
      }).then(function (response) {
        if (!response.ok) {
          // Refused before the stream started: ordinary JSON {error, detail}.
          return readJson(response).then(function (data) {
            discardRun(current);
            // A 402 carries the wallet's real balance: show it in the header too.
            if (response.status === 402 && data) updateBalance(data.balance);
            // A refusal that will not change on retry starts a fresh submission next time.
            if ([400, 402, 404, 413, 415].indexOf(response.status) !== -1) pending = null;
            statusBox.textContent = "";
            showError(errorMessage(response.status, data));
          });
        }
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("text/event-stream") === -1) {
          // The JSON answer is the same body as the `turn` event.
          return readJson(response).then(function (data) { return finishTurn(current, data || {}); });
        }
        return readEvents(response.body, function (name, data) {
          return handleEvent(current, name, data);
        }).then(function () {
          if (!current.final) {
            var lost = new Error("stream ended early");
            lost.lost = true;
            throw lost;
          }
          return current.final;
        });
      });
    }).catch(function (error) {
      discardRun(current);
      statusBox.textContent = "";
      showError(error && error.handled ? error.message
        : (error && error.lost ? "The connection closed before the answer finished."
          : "Could not reach Pantheon.") +
          " Check your connection and press Send again; you will not be charged twice.");
    }).then(function () {
      if (run === current) run = null;
      setBusy(false);
      // Back to the message box for the next question, without jumping away from the answer.
      textarea.focus({ preventScroll: true });
    });
  }

  function prefersReducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  // Open a conversation at its latest turn, with the message box in view (unless a link named a turn).
  if (!window.location.hash && conversation.querySelector(".turn")) form.scrollIntoView({ block: "end" });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });
  stopButton.addEventListener("click", stop);
  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });
})();
