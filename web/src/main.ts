// The dashboard's shell: log-in when auth is on, the header, and a hash router over the pages.
import "./style.css";
import { Api, ApiError, has, type Role } from "./api";
import { h } from "./dom";
import { imagePage } from "./pages/image";
import { jobsPage } from "./pages/jobs";
import { loginPage } from "./pages/login";
import { modelsPage } from "./pages/models";
import { overviewPage } from "./pages/overview";
import { pacsConnected, pacsPage } from "./pages/pacs";

/** What a page gets: the API, who is logged in, its element, and where to stop its timers. */
export interface Context {
  api: Api;
  user: string;
  can(role: Role): boolean;
  page: HTMLElement;
  /** Runs ``fn`` when the user leaves the page (stop polling). */
  onLeave(fn: () => void): void;
  /** The page's data is on screen (tests wait for this; it also marks the time in the performance API). */
  ready(): void;
}

type Page = (ctx: Context) => Promise<void>;

const ROUTES: [RegExp, string, (m: RegExpExecArray) => Page][] = [
  [/^#?\/?$/, "overview", () => overviewPage],
  [/^#\/jobs$/, "jobs", () => jobsPage],
  [/^#\/models$/, "models", () => modelsPage],
  [/^#\/pacs$/, "pacs", () => pacsPage],
  [/^#\/image\/(.+)$/, "image", (m) => (ctx) => imagePage(ctx, decodeURIComponent(m[1]))],
];

const api = new Api();
const top = document.getElementById("top") as HTMLElement;
const main = document.getElementById("page") as HTMLElement;
let leaving: (() => void)[] = [];
let who: { user: string; roles: string[] } | null = null;

function leave(): void {
  for (const fn of leaving) fn();
  leaving = [];
  delete main.dataset.ready;
}

function header(): void {
  if (!who) {
    top.replaceChildren(h("span", { class: "brand" }, "labelloop"));
    return;
  }
  const open = h("input", { name: "image", placeholder: "image id", "aria-label": "Open an image", size: 14 });
  const form = h(
    "form",
    {
      class: "open-image",
      onsubmit: (event: Event) => {
        event.preventDefault();
        if (open.value.trim()) location.hash = `#/image/${encodeURIComponent(open.value.trim())}`;
      },
    },
    open,
    h("button", { type: "submit" }, "Open"),
  );
  const link = (hash: string, text: string, id: string) => h("a", { href: hash, "data-nav": id }, text);
  top.replaceChildren(
    h("span", { class: "brand" }, "labelloop"),
    h(
      "nav",
      {},
      link("#/", "Progress", "overview"),
      link("#/jobs", "Jobs", "jobs"),
      link("#/models", "Models", "models"),
      h("a", { href: "/annotate/", "data-nav": "annotate" }, "Annotate"),
    ),
    form,
    h(
      "span",
      { class: "who" },
      h("span", { "data-testid": "user" }, who.user),
      h("span", { class: "muted" }, ` (${who.roles.map((r) => r.replace("monailabel-", "")).join(", ")})`),
      api.authEnabled
        ? h(
            "button",
            {
              type: "button",
              "data-testid": "logout",
              onclick: () => {
                api.logout(true);
                void start();
              },
            },
            "Log out",
          )
        : null,
    ),
  );
}

async function route(): Promise<void> {
  leave();
  if (!who) return;
  const hash = location.hash || "#/";
  const found = ROUTES.map(([re, name, page]) => [re.exec(hash), name, page] as const).find(([m]) => m);
  for (const a of top.querySelectorAll<HTMLAnchorElement>("nav a")) {
    a.classList.toggle("current", found !== undefined && a.dataset.nav === found[1]);
  }
  // Each visit renders into an element of its own: a page still loading when the user moves on
  // writes into a detached element, never over the next page.
  const el = h("div", { class: "page" });
  main.replaceChildren(el);
  if (!found) {
    el.append(h("p", { class: "error" }, `No page ${hash}`));
    return;
  }
  const [match, name, page] = found;
  document.body.dataset.page = name;
  const roles = who.roles;
  const ctx: Context = {
    api,
    user: who.user,
    can: (role) => has(roles, role),
    page: el,
    onLeave: (fn) => leaving.push(fn),
    ready: () => {
      if (!el.isConnected) return;
      if (main.dataset.ready === undefined) performance.mark(`labelloop:${name}:ready`);
      main.dataset.ready = "";
    },
  };
  try {
    await page(match as RegExpExecArray)(ctx);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // back at the log-in form
    el.append(h("p", { class: "error", role: "alert" }, `Could not load this page: ${String(error)}`));
  }
}

/**
 * Where to go once logged in: ``/?next=/ohif/...`` is how OHIF's pages send a browser without a
 * session cookie here; only OHIF's own paths are followed (no open redirect).
 */
function nextPage(): string | null {
  const next = new URLSearchParams(location.search).get("next");
  return next !== null && next.startsWith("/ohif/") ? next : null;
}

async function start(): Promise<void> {
  leave();
  who = null;
  header();
  const next = nextPage();
  if (api.authEnabled && (!api.loggedIn || next !== null)) {
    // A log-in sets the cookie OHIF needs; a token of this tab alone would not.
    document.body.dataset.page = "login";
    await loginPage(main, api, () => (next !== null ? location.replace(next) : void start()));
    return;
  }
  try {
    const me = await api.who();
    who = { user: me.username, roles: me.roles };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    throw error;
  }
  header();
  void pacsEntry();
  await route();
}

/**
 * The header's entries of a server whose ``/info/`` says it reads a PACS: OHIF (its viewer, at
 * ``/ohif/``) for everyone and the PACS page for reviewers (the page needs that role). They are
 * added when the answer comes, without holding up the page; ``nav[data-pacs]`` (``on`` or
 * ``off``) says it has been decided.
 */
async function pacsEntry(): Promise<void> {
  const nav = top.querySelector<HTMLElement>("nav");
  if (!nav) return;
  let on = false;
  try {
    on = who !== null && pacsConnected(await api.info()) === true;
  } catch {
    // no entries: the pages are still at #/pacs and /ohif/
  }
  if (!nav.isConnected) return; // logged out meanwhile: a new header
  const annotate = nav.querySelector('a[data-nav="annotate"]');
  if (on && who && has(who.roles, "reviewer") && !nav.querySelector('a[data-nav="pacs"]')) {
    const entry = h("a", { href: "#/pacs", "data-nav": "pacs" }, "PACS");
    entry.classList.toggle("current", document.body.dataset.page === "pacs");
    nav.insertBefore(entry, annotate);
  }
  if (on && !nav.querySelector('a[data-nav="ohif"]')) {
    nav.append(h("a", { href: "/ohif/", "data-nav": "ohif" }, "OHIF"));
  }
  nav.dataset.pacs = on ? "on" : "off";
}

api.onUnauthorized = () => void start();
window.addEventListener("hashchange", () => void route());
await api.detectAuth();
await start();
