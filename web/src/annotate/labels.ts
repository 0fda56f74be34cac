// The app's labels (name and value, as /info/ lists them) and their volumes in the drawing.
import { h } from "../dom";

export interface Label {
  name: string;
  value: number;
}

/** ``/info/``'s ``labels``: a list of names (a name's value is its place) or ``{name: value}``;
 * background (0) is left out: it is what the eraser paints. */
export function labelsOf(labels: unknown): Label[] {
  let found: Label[] = [];
  if (Array.isArray(labels)) {
    found = labels.map((name, value) => ({ name: String(name), value }));
  } else if (labels && typeof labels === "object") {
    found = Object.entries(labels as Record<string, unknown>)
      .filter(([, value]) => typeof value === "number")
      .map(([name, value]) => ({ name, value: value as number }));
  }
  found = found.filter((l) => l.value > 0 && l.value < 256 && l.name.toLowerCase() !== "background");
  return found.length > 0 ? found.sort((a, b) => a.value - b.value) : [{ name: "label", value: 1 }];
}

/** How many voxels of the drawing hold each value (index = value). */
export function voxelCounts(drawing: Uint8Array): Uint32Array {
  const counts = new Uint32Array(256);
  for (let i = 0; i < drawing.length; i++) counts[drawing[i]]++;
  return counts;
}

/** Millilitres with a sensible number of digits. */
export function ml(value: number): string {
  if (value === 0) return "0";
  return value >= 100 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(3);
}

/** The table of each label's volume: voxels × one voxel's volume (from the image's header). */
export function volumeTable(labels: Label[], counts: Uint32Array, voxelMl: number, color: (v: number) => string): HTMLElement {
  const rows = labels.map((label) =>
    h(
      "tr",
      { "data-label": label.name, "data-voxels": counts[label.value] },
      h("td", {}, h("span", { class: "swatch", style: `background: ${color(label.value)}` }), label.name),
      h("td", { class: "num", "data-field": "ml" }, ml(counts[label.value] * voxelMl)),
      h("td", { class: "num muted", "data-field": "voxels" }, counts[label.value]),
    ),
  );
  return h(
    "table",
    { class: "volumes", "data-testid": "volumes" },
    h("thead", {}, h("tr", {}, h("th", {}, "Label"), h("th", { class: "num" }, "mL"), h("th", { class: "num" }, "voxels"))),
    h("tbody", {}, rows),
  );
}
