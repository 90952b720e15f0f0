// The family tree: Cytoscape.js over the page's own JSON twin (no inline script, no CDN).
// Groups ("N more") expand on click by asking the twin for that group; models open their page.
(function () {
  "use strict";
  var box = document.getElementById("tree");
  if (!box || typeof cytoscape === "undefined") { return; }
  if (typeof cytoscapeDagre !== "undefined") { cytoscape.use(cytoscapeDagre); }
  var details = document.getElementById("details");
  var src = box.getAttribute("data-src");
  var opened = {};  // groups already expanded: a later answer lists them grouped again

  function elements(doc) {
    var els = [];
    doc.nodes.forEach(function (n) {
      els.push({ group: "nodes", data: { id: n.id, label: n.label, kind: n.kind, edge: n.edge || "", score: n.score, relation: n.relation || "",
        license: n.license || "", differs: n.license_differs ? "yes" : "", group: n.group || "", count: n.count || 0 } });
    });
    doc.edges.forEach(function (e) {
      els.push({ group: "edges", data: { id: e.source + ">" + e.target, source: e.source, target: e.target, kind: e.kind } });
    });
    return els;
  }

  // A node is a box holding its label (edges end at the box, so none runs through a label), as wide as
  // the label at the style's font: 10 px text averages under 6 px a character.
  function boxWidth(node) { return Math.max(28, String(node.data("label")).length * 6 + 16); }

  // Left to right, each rank a column: every box of a column gets the column's widest width, and edges run
  // from a parent's right side to a child's left side, so an edge crosses only the gap between columns.
  function columns(cy) {
    var widest = {};
    cy.nodes().forEach(function (node) {
      var x = Math.round(node.position("x"));
      widest[x] = Math.max(widest[x] || 0, node.data("w"));
    });
    cy.nodes().forEach(function (node) { node.data("w", widest[Math.round(node.position("x"))]); });
    cy.edges().addClass("lr");
  }

  function layout(cy) {
    var n = cy.nodes().length;
    var opts = n <= 150 ? { name: "dagre", rankDir: "LR", nodeSep: 6, rankSep: 48, animate: false }
                        : { name: "concentric", minNodeSpacing: 4, animate: false,
                            concentric: function (node) { return node.data("kind") === "focus" ? 2 : 1; },
                            levelWidth: function () { return 1; } };
    if (opts.name === "dagre" && typeof cytoscapeDagre === "undefined") { opts = { name: "breadthfirst", directed: true }; }
    cy.nodes().forEach(function (node) { node.data("w", boxWidth(node)); });
    cy.layout(opts).run();
    if (opts.name === "dagre") { columns(cy); }
    cy.fit(undefined, 16);
    // a big tree on a small screen: readable text around the focus, the rest a pan away
    if (cy.zoom() > 1.4) {  // a small tree: readable, not blown up to the box
      cy.zoom(1.4);
      cy.center();
    }
    var least = box.clientWidth < 600 ? 1 : 0.7;  // a phone's box: full-size text, panned
    if (cy.zoom() < least) {  // the tree's left edge at the box's, the focus's row in the middle
      var focus = cy.nodes("[kind = 'focus']");
      cy.zoom(least);
      cy.pan({ x: 16 - cy.elements().boundingBox().x1 * least, y: box.clientHeight / 2 - focus.position("y") * least });
    }
  }

  function modelUrl(id) { return "/model/" + id.split("/").map(encodeURIComponent).join("/"); }

  function link(text, href) {
    var a = document.createElement("a");
    a.textContent = text;
    a.href = href;
    return a;
  }

  function show(node) {
    var d = node.data();
    var lines = [d.label];
    if (d.kind === "group") { lines.push(d.count + " models; click to open the group"); }
    else if (d.kind === "rest") { lines.push("listed on the model page of the focus"); }
    else {
      if (d.kind === "focus") { lines.push("the focus of this view"); }
      else if (d.edge) {
        lines.push(d.edge === "DERIVED_FROM" ? "detected" : d.edge === "DECLARES_BASE" ? "declared only (its card names it)"
          : d.edge === "SAME_WEIGHTS" ? "exact copy (the same weight files)" : d.edge);
      }
      if (d.relation && d.edge === "DERIVED_FROM") { lines.push("relation " + d.relation + " (typed from the weights)"); }
      if (d.score !== null && d.score !== undefined) { lines.push("score " + Number(d.score).toFixed(3)); }
      lines.push("licence " + (d.license || "none"));
      if (d.differs) { lines.push("licence differs from the family's"); }
    }
    details.textContent = lines.join("\n") + "\n";  // text, never HTML: ids come from the Hub
    if (d.kind === "model" || d.kind === "ancestor" || d.kind === "focus" || d.kind === "copy") {
      var here = new URL(window.location.href);
      here.searchParams.set("focus", d.label);
      here.searchParams.delete("expand");
      details.appendChild(link("open its page", modelUrl(d.label)));
      details.appendChild(document.createTextNode("  ·  "));
      details.appendChild(link("centre the tree on it", here.pathname + here.search));
    }
  }

  fetch(src, { headers: { Accept: "application/json" } }).then(function (r) { return r.json(); }).then(function (doc) {
    var cy = cytoscape({
      container: box, elements: elements(doc), wheelSensitivity: 0.3,
      style: [
        { selector: "node", style: { "label": "data(label)", "font-size": 10, "text-valign": "center", "text-halign": "center",
          "shape": "round-rectangle", "width": "data(w)", "height": 20, "background-color": "#e8eefb",
          "border-width": 1, "border-color": "#2f5fd0", "color": "#1d2330" } },
        { selector: "node[kind = 'focus']", style: { "background-color": "#1d2330", "border-color": "#1d2330", "color": "#fff",
          "font-weight": "bold" } },
        { selector: "node[kind = 'ancestor']", style: { "background-color": "#eceef2", "border-color": "#5d6675" } },
        { selector: "node[edge = 'DECLARES_BASE']", style: { "background-color": "#f4f5f7", "border-color": "#9aa3b2",
          "border-style": "dashed" } },
        { selector: "node[kind = 'copy']", style: { "background-color": "#fff", "border-color": "#5d6675", "border-style": "dotted",
          "border-width": 2 } },
        { selector: "node[differs = 'yes']", style: { "border-width": 3, "border-color": "#b3261e" } },
        { selector: "node[kind = 'rest']", style: { "background-color": "#d9dde5", "border-color": "#9aa3b2" } },
        { selector: "node[kind = 'group']", style: { "background-color": "#fbf1dc", "border-color": "#c98a00", "border-width": 2 } },
        { selector: "edge", style: { "width": 1, "line-color": "#9aa3b2", "curve-style": "bezier", "target-arrow-shape": "none" } },
        { selector: "edge.lr", style: { "source-endpoint": "50% 0%", "target-endpoint": "-50% 0%" } },
        { selector: "edge[kind = 'DECLARES_BASE']", style: { "line-style": "dashed" } },
        { selector: "edge[kind = 'SAME_WEIGHTS']", style: { "line-style": "dotted", "width": 2 } }
      ]
    });
    window.__cy = cy;
    layout(cy);
    show(cy.nodes("[kind = 'focus']"));  // the panel starts with the focus, not empty
    cy.on("mouseover", "node", function (ev) { show(ev.target); });
    cy.on("tap", "node", function (ev) {
      var d = ev.target.data();
      if (d.kind === "group") {
        var url = new URL(src, window.location.href);
        url.searchParams.set("expand", d.group);
        opened[d.group] = true;
        fetch(url.toString(), { headers: { Accept: "application/json" } }).then(function (r) { return r.json(); }).then(function (more) {
          var fresh = elements(more);
          cy.remove(ev.target);
          cy.add(fresh.filter(function (el) {
            return el.group === "nodes" && !cy.getElementById(el.data.id).length && !(el.data.kind === "group" && opened[el.data.group]);
          }));
          cy.add(fresh.filter(function (el) {
            return el.group === "edges" && !cy.getElementById(el.data.id).length &&
              cy.getElementById(el.data.source).length && cy.getElementById(el.data.target).length;
          }));
          layout(cy);
          box.setAttribute("data-expanded", String(Number(box.getAttribute("data-expanded") || 0) + 1));
        });
      } else if (d.kind === "model" || d.kind === "ancestor" || d.kind === "copy") {
        window.location.href = modelUrl(d.label);
      }
    });
    box.setAttribute("data-ready", "1");
  }).catch(function (err) {
    details.textContent = "could not load the tree: " + err;
  });
})();
