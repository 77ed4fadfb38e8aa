(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("round-data").textContent);
  var ids = data.ids, names = data.names, n = ids.length;
  var storageKey = data.key;
  var answers = Object.create(null);  // id (a row's number or a file's path) -> label
  var current = 0, typed = "";
  var big = document.getElementById("big");
  var thumbs = Array.prototype.slice.call(document.querySelectorAll(".thumb"));
  var classButtons = Array.prototype.slice.call(document.querySelectorAll(".cls"));

  function load() {
    var stored = null;
    try { stored = JSON.parse(window.localStorage.getItem(storageKey) || "{}"); } catch (e) { stored = {}; }
    ids.forEach(function (id) {
      var label = stored && stored[id];
      if (Number.isInteger(label) && label >= 0 && label < names.length) { answers[id] = label; }
    });
  }
  function store() {
    try { window.localStorage.setItem(storageKey, JSON.stringify(answers)); } catch (e) { /* private mode */ }
  }
  // A CSV field as Python's csv module writes it: quoted when it holds a comma, a quote or a line end (a path).
  function csvField(value) {
    var text = String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function labelText(label) { return label + " \u00b7 " + names[label]; }
  function answeredCount() { return ids.filter(function (id) { return id in answers; }).length; }

  function render() {
    var id = ids[current];
    big.src = thumbs[current].querySelector("img").src;
    big.alt = "sample " + id;
    document.getElementById("position").textContent = "Sample " + (current + 1) + " of " + n + " \u2014 id " + id;
    document.getElementById("answer").textContent =
      id in answers ? "Label: " + labelText(answers[id]) : "Not labeled yet";
    classButtons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.label) === answers[id]));
    });
    thumbs.forEach(function (thumb, k) {
      var answered = ids[k] in answers;
      thumb.classList.toggle("answered", answered);
      thumb.querySelector(".tanswer").textContent = answered ? "\u2713 " + labelText(answers[ids[k]]) : "not labeled";
      if (k === current) { thumb.setAttribute("aria-current", "true"); } else { thumb.removeAttribute("aria-current"); }
    });
    document.getElementById("counter").textContent = answeredCount() + " of " + n + " labeled";
    document.getElementById("typed").textContent = typed ? "Typed: " + typed + " (Enter to take it)" : "";
  }
  function go(k) { current = Math.max(0, Math.min(n - 1, k)); typed = ""; render(); }
  function pick(label) {
    answers[ids[current]] = label;
    store();
    document.getElementById("warning").textContent = "";
    go(current + 1);
  }
  function typeDigit(digit) {
    if (names.length <= 10) { if (digit < names.length) { pick(digit); } return; }
    var candidate = typed + String(digit);
    if (Number(candidate) >= names.length) { candidate = String(digit); }  // start over
    typed = candidate;
    if (typed === "0" || Number(typed) * 10 >= names.length) { pick(Number(typed)); } else { render(); }
  }
  function save() {
    var rows = ["id,label"];
    ids.forEach(function (id) { if (id in answers) { rows.push(csvField(id) + "," + answers[id]); } });
    var missing = n - answeredCount();
    document.getElementById("warning").textContent = missing ?
      missing + " of " + n + " samples have no label yet: answers.csv holds only the labeled ones. " +
      "The run keeps the answers given and asks only for the rest: " +
      "they stay 'not labeled' here; label them and save answers.csv again." : "";
    var blob = new Blob([rows.join("\n") + "\n"], {type: "text/csv"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "answers.csv";
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    document.getElementById("saved").textContent = "answers.csv downloaded (" + (rows.length - 1) +
      " rows). Move it into " + data.folder + " unless your browser saved it there.";
  }

  classButtons.forEach(function (button) {
    button.addEventListener("click", function () { pick(Number(button.dataset.label)); });
  });
  thumbs.forEach(function (thumb, k) { thumb.addEventListener("click", function () { go(k); }); });
  document.getElementById("prev").addEventListener("click", function () { go(current - 1); });
  document.getElementById("next").addEventListener("click", function () { go(current + 1); });
  document.getElementById("save").addEventListener("click", save);
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key;
    if (/^[0-9]$/.test(key)) { typeDigit(Number(key)); }
    else if (key === "Enter" && typed) { pick(Number(typed)); }
    else if (key === "Backspace" && typed) { typed = typed.slice(0, -1); render(); }
    else if (key === "Escape" && typed) { typed = ""; render(); }
    else if (key === "ArrowRight" || key === "ArrowDown" || key === "j") { go(current + 1); }
    else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") { go(current - 1); }
    else { return; }
    event.preventDefault();
  });
  window.addEventListener("storage", function (event) {
    if (event.key === storageKey) { answers = Object.create(null); load(); render(); }
  });

  load();
  var firstOpen = ids.findIndex(function (id) { return !(id in answers); });
  go(firstOpen < 0 ? 0 : firstOpen);
})();
