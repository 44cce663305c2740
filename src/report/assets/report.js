// keyward web view: filter and sort the keys table in place. The pages work without this
// script: the live view answers the filter form itself, the static site has pre-rendered
// filtered lists and sorted pages. Loaded as a file (no inline script: the live view's
// Content-Security-Policy forbids it).
(function () {
  'use strict';
  var form = document.getElementById('filters');
  var table = document.getElementById('keys');
  if (!form || !table) { return; }
  var live = form.getAttribute('data-mode') === 'live';
  form.hidden = false;
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var total = rows.length;
  var noMatch = document.getElementById('no-match');
  var statusOrder = ['active', 'expired', 'disabled', 'revoked', 'planned'];

  function field(name) {
    var el = form.elements.namedItem(name);
    return el ? el.value : '';
  }

  function matches(tr) {
    var d = tr.dataset;
    var store = field('store'), owner = field('owner'), status = field('status');
    var scope = field('scope'), label = field('label'), before = field('expiring_before');
    if (store && d.store !== store) { return false; }
    if (owner && d.owner !== owner) { return false; }
    if (status && d.status !== status) { return false; }
    if (scope && d.scopes.split(' ').indexOf(scope) < 0) { return false; }
    if (label && d.labels.split(' ').indexOf(label) < 0) { return false; }
    if (before && !(d.expires && d.expires < before)) { return false; }
    return true;
  }

  function apply() {
    var shown = 0;
    rows.forEach(function (tr) {
      var ok = matches(tr);
      tr.hidden = !ok;
      if (ok) { shown += 1; }
    });
    if (table.caption) {
      table.caption.textContent = shown + ' of ' + total + ' keys' + (shown < total ? ' (filtered)' : '');
    }
    if (noMatch) { noMatch.hidden = shown !== 0; }
  }

  function key(tr, by) {
    var d = tr.dataset;
    switch (by) {
      case 'store': return [d.store, d.name];
      case 'owner': return [d.owner, d.store, d.name];
      case 'status': return [String(statusOrder.indexOf(d.status)), d.store, d.name];
      // Keys that never expire last.
      case 'expires': return [d.expires ? '0' + d.expires : '1', d.store, d.name];
      default: return [d.name, d.store];
    }
  }

  function compare(a, b) {
    for (var i = 0; i < a.length; i += 1) {
      if (a[i] < b[i]) { return -1; }
      if (a[i] > b[i]) { return 1; }
    }
    return 0;
  }

  function sortBy(by) {
    rows.sort(function (a, b) { return compare(key(a, by), key(b, by)); });
    rows.forEach(function (tr) { body.appendChild(tr); });
    Array.prototype.forEach.call(table.tHead.querySelectorAll('th[data-sort]'), function (th) {
      if (th.getAttribute('data-sort') === by) {
        th.setAttribute('aria-sort', 'ascending');
      } else {
        th.removeAttribute('aria-sort');
      }
    });
    var hidden = form.elements.namedItem('sort');
    if (hidden) { hidden.value = by; }
  }

  form.addEventListener('input', apply);
  form.addEventListener('change', apply);
  form.addEventListener('submit', function (e) {
    // The static site cannot answer a query: filter here instead. The live view gets the
    // query too, so the URL can be shared.
    if (!live) { e.preventDefault(); apply(); }
  });
  Array.prototype.forEach.call(table.tHead.querySelectorAll('th[data-sort] a'), function (a) {
    a.addEventListener('click', function (e) {
      e.preventDefault();
      sortBy(a.parentNode.getAttribute('data-sort'));
    });
  });
  apply();
}());
