// Notes: live updates over server-sent events, and posting through the JSON API.
// Works without this script too: the forms post to the server and the page reloads.
(function () {
  "use strict";

  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.getAttribute("content") : "";
  };
  const mount = meta("notes-mount");
  const list = document.getElementById("notes");
  const version = document.getElementById("version");

  // The same markup as the server renders (src/pages.rs), built without innerHTML.
  function noteItem(note) {
    const li = document.createElement("li");
    li.className = "note fresh";
    li.dataset.id = String(note.id);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = note.text;
    const metaLine = document.createElement("p");
    metaLine.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = note.author;
    const time = document.createElement("time");
    time.dateTime = note.created;
    time.textContent = note.created;
    metaLine.append(author, " · ", time);
    for (const tag of note.tags || []) {
      const span = document.createElement("span");
      span.className = "tag";
      span.textContent = "#" + tag;
      metaLine.append(" ", span);
    }
    li.append(text, metaLine);
    return li;
  }

  function show(note) {
    if (list.querySelector(`li[data-id="${note.id}"]`)) {
      return; // already listed (our own post, or a replay after a reconnect)
    }
    list.prepend(noteItem(note));
  }

  function showVersion(data) {
    try {
      const v = JSON.parse(data).version;
      if (v) {
        version.textContent = v;
        version.classList.add("live");
      }
    } catch (_) {
      /* not JSON: ignore */
    }
  }

  // Live notes. The browser reconnects by itself (with Last-Event-ID) when the stream ends,
  // e.g. when a new version of the app takes over.
  if (window.EventSource && list) {
    const events = new EventSource(mount + "/events");
    events.addEventListener("hello", (e) => showVersion(e.data));
    events.addEventListener("note", (e) => {
      const note = JSON.parse(e.data);
      show(note);
      if (note.version) {
        version.textContent = note.version;
      }
    });
    events.addEventListener("draining", () => version.classList.remove("live"));
    events.addEventListener("error", () => version.classList.remove("live"));
  }

  // Post through the API, with the CSRF token in a header.
  const form = document.getElementById("post");
  if (form && window.fetch) {
    const error = document.getElementById("post-error");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = { text: form.elements.text.value };
      if (form.elements.tags) {
        body.tags = form.elements.tags.value;
      }
      error.hidden = true;
      try {
        const r = await fetch(mount + "/api/notes", {
          method: "POST",
          headers: { "content-type": "application/json", "x-csrf-token": meta("csrf-token") },
          body: JSON.stringify(body),
          credentials: "same-origin",
        });
        const answer = await r.json();
        if (!r.ok) {
          throw new Error(answer.error || r.statusText);
        }
        show(answer);
        form.reset();
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
      }
    });
  }
})();
