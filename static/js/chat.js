// Chat page: posts a turn to the JSON API without reloading, and shows each
// answer with its model, tokens and credits. No framework, no build step.
//
// Money stays exact: credits arrive from the API as decimal strings and are
// shown as they are; the page never does arithmetic on them.
(function () {
  "use strict";

  var form = document.getElementById("composer");
  if (!form) return;
  var textarea = document.getElementById("composer-content");
  var modelSelect = document.getElementById("composer-model");
  var fileInput = document.getElementById("composer-files");
  var button = document.getElementById("composer-send");
  var buttonLabel = button.querySelector(".button__label");
  var spinner = button.querySelector(".spinner");
  var statusBox = document.getElementById("composer-status");
  var errorBox = document.getElementById("composer-error");
  var conversation = document.getElementById("conversation");
  var turnsUrl = form.dataset.turnsUrl;
  var filesUrl = form.dataset.filesUrl;
  var maxFiles = parseInt(form.dataset.maxFiles || "5", 10);
  var csrfToken = document.querySelector('meta[name="csrf-token"]').content;

  var busy = false;
  // The submission being attempted. It keeps its Idempotency-Key (and its
  // uploaded file ids) until it succeeds or the user changes what they send,
  // so pressing Send again after a failure can never charge twice.
  var pending = null;

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

  // 2.0000 → "2", 1.5000 → "1.5" (same as the `multiplier` template filter).
  function formatMultiplier(value) {
    var text = String(value);
    if (text.indexOf(".") === -1) return text;
    return text.replace(/0+$/, "").replace(/\.$/, "");
  }

  // Exact sum of 4-place decimal strings (fixed point in BigInt, never floats).
  var SCALE = BigInt(10000);
  function toUnits(text) {
    var negative = text.charAt(0) === "-";
    var parts = (negative ? text.slice(1) : text).split(".");
    var units = BigInt(parts[0] || "0") * SCALE + BigInt(((parts[1] || "") + "0000").slice(0, 4));
    return negative ? -units : units;
  }
  function sumCredits(values) {
    var total = values.reduce(function (acc, v) { return acc + toUnits(String(v)); }, BigInt(0));
    var negative = total < BigInt(0);
    if (negative) total = -total;
    var fraction = (total % SCALE).toString();
    return (negative ? "-" : "") + (total / SCALE).toString() + "." + "0000".slice(fraction.length) + fraction;
  }

  function setBusy(on, label) {
    busy = on;
    button.disabled = on;
    button.setAttribute("aria-disabled", on ? "true" : "false");
    form.setAttribute("aria-busy", on ? "true" : "false");
    spinner.hidden = !on;
    buttonLabel.textContent = on ? (label || "Sending…") : "Send";
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

  // A readable sentence for every failure; never a stack trace or raw HTML.
  function errorMessage(status, body) {
    var detail = body ? detailText(body.detail) : "";
    switch (status) {
      case 400: return "That message could not be sent: " + (detail || "check what you wrote and try again.");
      case 401:
      case 403: return "Your session has ended. Log in again, then resend your message.";
      case 402:
        return "Not enough credits for this turn" +
          (body && body.estimated_credits ? " (it needs about " + body.estimated_credits + " credits" +
            (body.balance ? "; your balance is " + body.balance : "") + ")" : "") +
          ". Nothing was charged.";
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
        setBusy(true, "Uploading " + (i + 1) + "/" + files.length + "…");
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
    return chain.then(function () { return ids; });
  }

  // Same as Django's truncatechars: at most `max` characters, ending in "…".
  function truncate(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function toolItem(tool) {
    var name = tool.tool_name || tool.name || tool.tool || "tool";
    var args = tool.arguments || tool.args || {};
    var hint = args.query || args.file_id || args.name || "";
    var failed = tool.status && tool.status !== "ok";
    var item = el("li", "tag " + (failed ? "tag--error" : "tag--ok"),
      name + (hint ? ": " + truncate(String(hint), 40) : "") + (failed ? " (failed)" : ""));
    item.title = Object.keys(args).map(function (k) { return k + ": " + args[k]; }).join("; ") + (tool.error ? " — " + tool.error : "");
    return item;
  }

  function renderTurn(turn, question) {
    var count = conversation.querySelectorAll(".turn").length + 1;
    var article = el("article", "turn");
    article.dataset.testid = "turn";
    article.setAttribute("data-testid", "turn");
    article.dataset.turnId = turn.id;
    article.setAttribute("aria-label", "Turn " + count);

    var messages = turn.messages || [];
    var userMessage = messages.filter(function (m) { return m.role === "user"; })[0];
    var mine = el("div", "bubble bubble--user");
    var head = el("div", "bubble__head");
    head.appendChild(el("span", "bubble__who", "You"));
    mine.appendChild(head);
    mine.appendChild(el("div", "bubble__body", userMessage ? userMessage.content : question));
    var attached = (turn.files || []).length;
    if (attached) mine.appendChild(el("p", "bubble__files muted small", attached + " file" + (attached === 1 ? "" : "s") + " attached"));
    article.appendChild(mine);

    // Group the agent calls by alias: an agent that used a tool made several calls.
    var usage = turn.usage || [];
    var tools = turn.tool_calls || [];
    var seen = {};
    messages.forEach(function (message) {
      if (message.role !== "assistant") return;
      var alias = message.model_alias;
      var bubble = el("div", "bubble bubble--assistant");
      bubble.setAttribute("data-testid", "answer");
      bubble.dataset.model = alias;
      var bhead = el("div", "bubble__head");
      bhead.appendChild(el("span", "bubble__who", alias));
      var calls = seen[alias] ? [] : usage.filter(function (u) { return u.purpose === "agent" && u.model_alias === alias; });
      if (calls.length) bhead.appendChild(el("span", "muted small mono", calls[0].provider_model));
      bubble.appendChild(bhead);
      bubble.appendChild(el("div", "bubble__body", message.content));

      var myTools = seen[alias] ? [] : tools.filter(function (t) { return t.model_alias === alias; });
      if (myTools.length) {
        var list = el("ul", "tool-calls");
        list.setAttribute("aria-label", "Tools used");
        myTools.forEach(function (t) { list.appendChild(toolItem(t)); });
        bubble.appendChild(list);
      }
      seen[alias] = true;

      var cost = el("p", "bubble__cost");
      cost.setAttribute("data-testid", "answer-cost");
      var inTokens = 0, outTokens = 0;
      calls.forEach(function (c) { inTokens += c.input_tokens; outTokens += c.output_tokens; });
      cost.appendChild(el("span", null, inTokens + " in · " + outTokens + " out tokens"));
      if (calls.length > 1) cost.appendChild(el("span", null, calls.length + " calls"));
      if (calls.length) cost.appendChild(el("span", null, "×" + formatMultiplier(calls[0].multiplier)));
      var credits = el("span");
      var strong = el("strong", null, sumCredits(calls.map(function (c) { return c.credits_burned; })));
      strong.setAttribute("data-testid", "answer-credits");
      credits.appendChild(strong);
      credits.appendChild(document.createTextNode(" credits"));
      cost.appendChild(credits);
      bubble.appendChild(cost);
      article.appendChild(bubble);
    });

    var meta = el("div", "turn-meta");
    usage.forEach(function (u) {
      if (u.purpose === "agent" && seen[u.model_alias]) return;
      var label = (u.purpose === "manager" ? "routing" : u.purpose) + " by " + u.model_alias + " · " +
        u.input_tokens + " in · " + u.output_tokens + " out · " + (u.metered ? u.credits_burned + " credits" : "unmetered");
      var tag = el("span", "tag " + (u.metered ? "tag--agent" : "tag--unmetered"), label);
      tag.setAttribute("data-testid", u.purpose + "-call");
      meta.appendChild(tag);
    });
    var orphanTools = tools.filter(function (t) { return !seen[t.model_alias]; });
    if (orphanTools.length) {
      var olist = el("ul", "tool-calls");
      olist.setAttribute("aria-label", "Tools used");
      orphanTools.forEach(function (t) { olist.appendChild(toolItem(t)); });
      meta.appendChild(olist);
    }
    var total = el("span", "turn-total");
    total.setAttribute("data-testid", "turn-total");
    total.appendChild(document.createTextNode("Turn total: "));
    total.appendChild(el("strong", null, turn.credits_burned));
    total.appendChild(document.createTextNode(" credits"));
    meta.appendChild(total);
    article.appendChild(meta);

    var empty = document.getElementById("conversation-empty");
    if (empty) empty.remove();
    conversation.appendChild(article);
    article.scrollIntoView({ block: "start", behavior: prefersReducedMotion() ? "auto" : "smooth" });
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

    var fileIds = pending && pending.content === content && pending.alias === alias && pending.fileSignature === signature
      ? Promise.resolve(pending.fileIds)
      : (files.length ? uploadFiles(files) : Promise.resolve([]));

    fileIds.then(function (ids) {
      var body = { content: content };
      if (alias) body.model_alias = alias;
      if (ids.length) body.files = ids;
      var json = JSON.stringify(body);
      if (!pending || pending.json !== json) {
        pending = { key: newKey(), json: json, content: content, alias: alias, fileSignature: signature, fileIds: ids };
      }
      setBusy(true, "Thinking…");
      statusBox.textContent = "The agents are answering…";
      return fetch(turnsUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": csrfToken,
          "Idempotency-Key": pending.key,
        },
        body: json,
      }).then(function (response) {
        return readJson(response).then(function (data) {
          if (response.ok && data) {
            pending = null;
            renderTurn(data, content);
            updateBalance(data.balance);
            textarea.value = "";
            if (fileInput) fileInput.value = "";
            statusBox.textContent = "Answered. This turn burned " + data.credits_burned + " credits; balance " + data.balance + ".";
            return;
          }
          // A 402 carries the wallet's real balance: show it in the header too.
          if (response.status === 402 && data) updateBalance(data.balance);
          // A refusal that will not change on retry starts a fresh submission next time.
          if ([400, 402, 404, 413, 415].indexOf(response.status) !== -1) pending = null;
          statusBox.textContent = "";
          showError(errorMessage(response.status, data));
        });
      });
    }).catch(function (error) {
      statusBox.textContent = "";
      showError(error && error.handled ? error.message
        : "Could not reach Pantheon. Check your connection and press Send again; you will not be charged twice.");
    }).then(function () {
      setBusy(false);
      // Back to the message box for the next question, without jumping away from the answer.
      textarea.focus({ preventScroll: true });
    });
  }

  function prefersReducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  // Open a conversation at its latest turn, with the message box in view.
  if (conversation.querySelector(".turn")) form.scrollIntoView({ block: "end" });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });
  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });
})();
