(function () {
  "use strict";
  // Sortable tables: click a header to sort (again to reverse). A cell's data-sort is its key (numbers for
  // data-type="num" headers); empty keys always sort last; ties keep the review order (data-idx).
  function cellKey(row, col, numeric) {
    var cell = row.cells[col];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "") return null;
    if (numeric) {
      var x = parseFloat(raw);
      return isNaN(x) ? null : x;
    }
    return raw.toLowerCase();
  }

  function sortTable(th) {
    var table = th.closest("table");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a, col, numeric), y = cellKey(b, col, numeric);
      if (x === null || y === null) {
        if (x === y) return (+a.getAttribute("data-idx")) - (+b.getAttribute("data-idx"));
        return x === null ? 1 : -1;
      }
      if (x < y) return -dir;
      if (x > y) return dir;
      return (+a.getAttribute("data-idx")) - (+b.getAttribute("data-idx"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable th"), function (th) {
    th.setAttribute("tabindex", "0");
    th.setAttribute("title", "sort");
    th.addEventListener("click", function () { sortTable(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortTable(th); });
  });

  // Filter: free text over id / error / problems, and a verdict; the detail cards follow the table.
  var input = document.getElementById("filter");
  var select = document.getElementById("verdict");
  var shown = document.getElementById("shown");
  var table = document.getElementById("items-table");
  if (input && select && table) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var cards = {};
    Array.prototype.forEach.call(document.querySelectorAll("article.card"), function (card) {
      cards[card.getAttribute("data-idx")] = card;
    });
    var apply = function () {
      var q = input.value.trim().toLowerCase();
      var v = select.value;
      var n = 0;
      rows.forEach(function (row) {
        var cat = row.getAttribute("data-category");
        var ok = (!q || row.getAttribute("data-search").indexOf(q) >= 0) &&
          (v === "all" || v === cat || (v === "attention" && cat !== "pass"));
        row.hidden = !ok;
        var card = cards[row.getAttribute("data-idx")];
        if (card) card.hidden = !ok;
        if (ok) n += 1;
      });
      if (shown) shown.textContent = n + " of " + rows.length + " items shown";
    };
    input.addEventListener("input", apply);
    select.addEventListener("change", apply);
    Array.prototype.forEach.call(document.querySelectorAll("button.tile[data-filter]"), function (tile) {
      tile.addEventListener("click", function () {
        select.value = tile.getAttribute("data-filter");
        apply();
        table.scrollIntoView();
      });
    });
    // Shareable views: report.html#verdict=fail&q=text&sort=-row (a header's text; "-" sorts descending).
    var params = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var eq = part.indexOf("=");
      if (eq > 0) params[decodeURIComponent(part.slice(0, eq))] = decodeURIComponent(part.slice(eq + 1));
    });
    if (params.verdict && select.querySelector("option[value='" + params.verdict.replace(/[^a-z]/g, "") + "']")) {
      select.value = params.verdict;
    }
    if (params.q) input.value = params.q;
    if (params.sort) {
      var desc = params.sort.charAt(0) === "-";
      var name = desc ? params.sort.slice(1) : params.sort;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        if (th.textContent.trim() === name) {
          sortTable(th);
          if (desc) sortTable(th);
        }
      });
    }
    apply();
  }
  document.body.setAttribute("data-ready", "1");
})();
