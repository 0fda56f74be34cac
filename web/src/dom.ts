// A few DOM helpers and formatters: the pages build their elements with h(), never with innerHTML,
// so no string from the API (ids, user names, log lines) is ever parsed as markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

/** An element with attributes (``on*`` ones are listeners; false and null are left out) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A table with a header row; ``rows`` empty shows ``empty`` instead. */
export function table(headers: string[], rows: Child[][], empty = "None yet"): HTMLElement {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", {}, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

/** A titled box of the page; ``data-section`` is its title in lower case with dashes. */
export function section(title: string, ...children: (Child | Child[])[]): HTMLElement {
  const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  return h("section", { class: "card", "data-section": slug }, h("h2", {}, title), ...children);
}

/** A figure: a big number with its label. */
export function stat(label: string, value: number | string, testid: string, note?: string): HTMLElement {
  return h(
    "div",
    { class: "stat" },
    h("div", { class: "value", "data-testid": testid }, value),
    h("div", { class: "label" }, label),
    note ? h("div", { class: "note" }, note) : null,
  );
}

/** Epoch seconds as local date and time (``2025-03-01 14:05``). */
export function when(ts: number | null | undefined): string {
  if (ts === null || ts === undefined) return "–";
  const d = new Date(ts * 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Seconds as ``42 s``, ``3 min 5 s``, ``2 h 10 min``. */
export function duration(s: number | null | undefined): string {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** A number with up to ``digits`` decimals, or a dash. */
export function num(x: unknown, digits = 3): string {
  return typeof x === "number" && Number.isFinite(x) ? String(Number(x.toFixed(digits))) : "–";
}

/** Bytes as ``12.3 MB``. */
export function bytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A message line (errors in red) that replaces the previous one in ``box``. */
export function say(box: HTMLElement, text: string, error = false): void {
  box.replaceChildren(h("p", { class: error ? "error" : "ok", role: error ? "alert" : "status" }, text));
}
