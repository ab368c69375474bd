// The Ventros console: plain modules, no build step, served from the binary. Every call goes
// through projection-service's authenticated API with the key the operator pasted, kept in
// sessionStorage (this tab only). Data is put on the page as text nodes, never as HTML.

const SESSION = "ventros-console";
const POLL_MS = 2000;

let session = JSON.parse(sessionStorage.getItem(SESSION) || "null");
let caller = null;
let timer = null;

// ---- small helpers --------------------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svgNs = "http://www.w3.org/2000/svg";

/** A sparkline of `values` (the last 15 minutes of a consumer's lag). */
function sparkline(values, label) {
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 160 28");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 160 / (values.length - 1) : 0;
  const line = document.createElementNS(svgNs, "polyline");
  line.setAttribute(
    "points",
    values.map((v, i) => `${(i * step).toFixed(1)},${(26 - (v / max) * 24).toFixed(1)}`).join(" "),
  );
  svg.append(line);
  return svg;
}

function say(text) {
  document.getElementById("status").textContent = text;
}

function seconds(s) {
  if (s === null || s === undefined) return "?";
  return s < 10 ? s.toFixed(1) + " s" : Math.round(s) + " s";
}

function when(at) {
  return at ? new Date(at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

class Refused extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** A call to the project's API; a 401 signs the operator out. */
async function api(path, options = {}) {
  const response = await fetch(`/v1/projects/${session.project}${path}`, {
    ...options,
    headers: { authorization: `Bearer ${session.key}`, accept: "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    signOut("The key was refused (401): it is unknown, revoked or expired.");
    throw new Refused(401);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Refused(response.status, body && body.detail);
  return body;
}

function may(permission) {
  return caller && caller.permissions.includes(permission);
}

// ---- signing in and out ---------------------------------------------------------------------

async function signIn(project, key) {
  session = { project, key };
  try {
    caller = await api("/me");
  } catch (e) {
    if (e.status !== 401) {
      signOut(e.status === 404 ? "No such project for this key (404)." : `Could not sign in: ${e.message}`);
    }
    return false;
  }
  sessionStorage.setItem(SESSION, JSON.stringify(session));
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("page").hidden = false;
  document.getElementById("who").textContent = `${caller.role} · project ${project.slice(0, 8)}`;
  return true;
}

function signOut(message = "") {
  session = null;
  caller = null;
  clearInterval(timer);
  sessionStorage.removeItem(SESSION);
  document.getElementById("login").hidden = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("page").hidden = true;
  document.getElementById("login-error").textContent = message;
  document.getElementById("key").value = "";
  if (location.hash) history.replaceState(null, "", location.pathname);
  document.getElementById("key").focus();
}

// ---- pages ----------------------------------------------------------------------------------

function show(title, ...content) {
  const page = document.getElementById("page");
  page.replaceChildren(h("h2", { id: "page-title", tabindex: "-1" }, title), ...content);
  page.setAttribute("aria-labelledby", "page-title");
  return page;
}

async function pipelinePage() {
  const body = h("div", { id: "pipeline" }, h("p", {}, "Loading…"));
  show("Pipeline", body);
  const draw = async () => {
    let p;
    try {
      p = await api("/ops/pipeline");
    } catch (e) {
      if (e.status !== 401) body.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
      return;
    }
    const lagging = p.consumers.reduce((n, c) => n + c.lag_events, 0);
    body.replaceChildren(
      h("div", { class: "cards" },
        card("Outbox backlog", `${p.outbox.pending} (oldest ${seconds(p.outbox.oldest_pending_seconds)})`, "outbox"),
        card("Events not yet applied", String(lagging), "lagging"),
        card("Relay", p.relay ? p.relay.held_by : "no instance relays", "relay"),
        card("Rebuild", p.rebuild ? `running (${p.rebuild.held_by})` : "none running", "rebuild"),
      ),
      h("h3", {}, "Partition consumers"),
      h("div", { class: "scroll" },
        h("table", { id: "consumers" },
          h("caption", { class: "visually-hidden" }, "Each partition consumer's position, backlog and lag"),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Partition"),
            h("th", { scope: "col" }, "Consumer"),
            h("th", { scope: "col", class: "num" }, "Acked through"),
            h("th", { scope: "col", class: "num" }, "Pending"),
            h("th", { scope: "col", class: "num" }, "Unacked"),
            h("th", { scope: "col", class: "num" }, "Lag (events)"),
            h("th", { scope: "col", class: "num" }, "Lag (s)"),
            h("th", { scope: "col" }, "Last 15 min"),
            h("th", { scope: "col" }, "Owner"),
          )),
          h("tbody", {}, p.consumers.map((c) => h("tr", { "data-partition": c.partition },
            h("th", { scope: "row" }, String(c.partition)),
            h("td", {}, c.consumer),
            h("td", { class: "num", "data-field": "acked_through" }, String(c.acked_through)),
            h("td", { class: "num", "data-field": "pending" }, String(c.pending)),
            h("td", { class: "num", "data-field": "unacked" }, String(c.unacked)),
            h("td", { class: "num", "data-field": "lag_events" }, String(c.lag_events)),
            h("td", { class: "num", "data-field": "lag_seconds" }, seconds(c.lag_seconds)),
            h("td", {}, sparkline(c.history.map((s) => s.lag_events).concat([c.lag_events]),
              `lag of partition ${c.partition} over the last 15 minutes`)),
            h("td", {}, c.owner || "nobody"),
          ))),
        ),
      ),
      h("h3", {}, "Projection instances"),
      h("ul", { id: "instances" }, p.instances.map((i) =>
        h("li", {}, `${i.instance}: ${i.partitions.length ? "partitions " + i.partitions.join(", ") : "no partition"}`))),
      h("p", { class: "who" }, `Read at ${when(p.at)}; refreshed every 2 s.`),
    );
  };
  await draw();
  timer = setInterval(draw, POLL_MS);
}

function card(title, value, id) {
  return h("div", { class: "card" }, h("h3", {}, title), h("p", { id }, value));
}

async function parkedPage() {
  const list = h("ul", { class: "list", id: "parked" });
  show("Parked events", h("p", {}, "Events a projection could not apply, oldest first. A retry applies the event again as the store holds it."), list);
  let parked;
  try {
    parked = await api("/ops/dead-letters");
  } catch (e) {
    if (e.status !== 401) list.replaceChildren(h("li", { class: "error" }, e.message));
    return;
  }
  if (parked.items.length === 0) {
    list.replaceChildren(h("li", { id: "no-parked" }, "Nothing is parked."));
    return;
  }
  list.replaceChildren(...parked.items.map((d) => {
    const outcome = h("p", { class: "outcome", role: "status" });
    const retry = may("retry_parked_events")
      ? h("button", {
          type: "button",
          class: "retry",
          "data-id": d.id,
          onclick: async (event) => {
            const button = event.currentTarget;
            button.disabled = true;
            outcome.textContent = "Retrying…";
            try {
              const r = await api(`/ops/dead-letters/${d.id}/retry`, { method: "POST" });
              outcome.className = r.status === "resolved" ? "outcome good" : "outcome error";
              outcome.textContent = r.status === "resolved" ? "Resolved: applied." : `Still parked: ${r.error || "it failed again"}`;
              if (r.status !== "resolved") button.disabled = false;
            } catch (e) {
              outcome.className = "outcome error";
              outcome.textContent = `Retry refused: ${e.message}`;
              button.disabled = false;
            }
          },
        }, "Retry")
      : null;
    return h("li", { "data-id": d.id },
      h("div", { class: "row" },
        h("strong", {}, d.event_type),
        h("span", {}, `${d.aggregate_type} ${d.aggregate_id} v${d.sequence_number}`),
        h("span", { class: "who" }, `${d.consumer_name}, parked ${when(d.parked_at)}, ${d.attempts} attempt(s)`),
      ),
      h("p", { class: "error" }, d.error),
      h("details", {}, h("summary", {}, "The event"), h("pre", {}, JSON.stringify(d.event, null, 2))),
      retry,
      outcome,
    );
  }));
}

async function contactsPage() {
  const results = h("ul", { class: "list", id: "results" });
  const input = h("input", { id: "search", type: "search", name: "q", placeholder: "a name, an e-mail, a phone" });
  const form = h("form", {
    role: "search",
    onsubmit: async (event) => {
      event.preventDefault();
      const q = input.value.trim();
      try {
        const page = await api(`/contacts?limit=50${q ? "&q=" + encodeURIComponent(q) : ""}`);
        results.replaceChildren(...(page.items.length ? page.items.map((c) =>
          h("li", {}, h("a", { href: `#/contacts/${c.id}` }, c.name || "(no name)"),
            " ", h("span", { class: "who" }, [c.email, c.phone].filter(Boolean).join(" · ")))) : [h("li", {}, "No contact matches.")]));
        say(`${page.items.length} contacts`);
      } catch (e) {
        if (e.status !== 401) results.replaceChildren(h("li", { class: "error" }, e.message));
      }
    },
  }, h("label", { for: "search" }, "Search contacts"), input, h("button", { type: "submit" }, "Search"));
  show("Contacts", form, results);
  form.requestSubmit();
}

/** The fields of a contact shown side by side through time. */
const FIELDS = ["name", "email", "phone", "tags", "external_id", "language", "timezone", "source_channel", "profile_picture_url", "deleted_at", "forgotten"];

async function contactPage(id) {
  let now;
  try {
    now = await api(`/contacts/${id}`);
  } catch (e) {
    if (e.status !== 401) show("Contact", h("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  const last = now.version;
  const state = h("div", { id: "state" });
  const slider = h("input", { id: "version", type: "range", min: 1, max: last, value: last, step: 1 });
  const shown = h("output", { for: "version", id: "version-shown" }, `version ${last} of ${last}`);
  const timeline = h("ol", { class: "list", id: "timeline", reversed: true });
  const sessions = h("div", { id: "sessions" });
  show(now.name || "Contact",
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "state-title" },
        h("h3", { id: "state-title" }, "Through time"),
        h("label", { for: "version" }, "Version"),
        slider, " ", shown, state),
      h("section", { "aria-labelledby": "timeline-title" },
        h("h3", { id: "timeline-title" }, "Timeline, newest first"), timeline),
    ),
    h("section", { "aria-labelledby": "sessions-title" }, h("h3", { id: "sessions-title" }, "Sessions"), sessions),
  );
  let wanted = last;
  const drawAt = async (version) => {
    wanted = version;
    const [at, before] = await Promise.all([
      api(`/contacts/${id}?as_of_version=${version}`),
      version > 1 ? api(`/contacts/${id}?as_of_version=${version - 1}`) : Promise.resolve(null),
    ]);
    // A slider moved quickly asks for several versions at once: only the last one asked shows.
    if (version !== wanted) return;
    shown.textContent = `version ${version} of ${last}`;
    const rows = FIELDS.filter((f) => f in at).map((f) => {
      const value = JSON.stringify(at[f]);
      const changed = before !== null && JSON.stringify(before[f]) !== value;
      return h("tr", { class: changed ? "changed" : null, "data-field": f },
        h("th", { scope: "row" }, f),
        h("td", {}, at[f] === null || at[f] === undefined ? "—" : Array.isArray(at[f]) ? at[f].join(", ") : String(at[f])),
        h("td", {}, changed ? "changed" : ""));
    });
    state.replaceChildren(h("table", {},
      h("caption", { class: "visually-hidden" }, `The contact at version ${version}; changed fields are marked`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "In this version"))),
      h("tbody", {}, rows)));
    say(`version ${version}`);
  };
  slider.addEventListener("input", () => drawAt(Number(slider.value)).catch((e) => say(e.message)));
  await drawAt(last);
  const events = await api(`/contacts/${id}/events?limit=500`);
  timeline.replaceChildren(...events.items.slice().reverse().map((e) => h("li", {},
    h("div", { class: "row" }, h("strong", {}, e.event_type), h("span", {}, `${e.aggregate_type} v${e.sequence_number}`), h("span", { class: "who" }, when(e.occurred_at))),
    h("p", { class: "who" }, `by ${e.user_id || "the system"} · correlation ${e.correlation_id || "none"}`))));
  const owned = await api(`/contacts/${id}/sessions?limit=50`);
  sessions.replaceChildren(owned.items.length === 0 ? h("p", {}, "No session.") : h("ul", { class: "list" }, owned.items.map((s) => {
    const messages = h("div");
    return h("li", {},
      h("div", { class: "row" }, h("strong", {}, `${s.status} session`), h("span", { class: "who" }, `started ${when(s.started_at)}`),
        h("span", {}, `${s.message_count} messages (${s.messages_from_contact} from the contact), ` +
          `${s.agent_ids.length} agent(s), ${s.duration_seconds} s long` +
          (s.agent_response_time_seconds === null ? "" : `, first answer after ${s.agent_response_time_seconds} s`))),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        const page = await api(`/sessions/${s.id}/messages?limit=50`);
        messages.replaceChildren(h("ol", {}, page.items.map((m) => h("li", {}, `${m.from_contact ? "contact" : "agent"}: ${m.text ?? "(" + (m.content_type || "no text") + ")"}`))));
      } }, "Show messages"),
      messages);
  })));
}

// ---- routing --------------------------------------------------------------------------------

async function route() {
  clearInterval(timer);
  if (!session || !caller) return;
  const [, page, id] = (location.hash || "#/pipeline").split("/");
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === (page || "pipeline")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page === "parked") await parkedPage();
  else if (page === "contacts" && id) await contactPage(id);
  else if (page === "contacts") await contactsPage();
  else await pipelinePage();
  document.getElementById("page-title")?.focus();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const project = document.getElementById("project").value.trim();
  const key = document.getElementById("key").value.trim();
  document.getElementById("login-error").textContent = "";
  if (await signIn(project, key)) await route();
});
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", route);

if (session && (await signIn(session.project, session.key))) await route();
else document.getElementById("project").focus();
