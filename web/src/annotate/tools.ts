// The panels that work on the view and the drawing: window/level and the view; the label, the
// tool (navigate, clicks, paint, erase), the pen, the drawing's opacity and undo.
import { h, section } from "../dom";
import type { Context } from "./context";
import type { Label } from "./labels";
import type { Tool, View } from "./viewer";

/** CT windows (width, level in HU); "auto" is NiiVue's robust range of the image. */
const PRESETS: Record<string, [number, number] | null> = {
  auto: null,
  "soft tissue": [400, 40],
  liver: [150, 60],
  lung: [1500, -600],
  bone: [1800, 400],
  brain: [80, 40],
};
const VIEWS: [View, string][] = [
  ["multi", "3 planes + 3D"],
  ["axial", "axial"],
  ["coronal", "coronal"],
  ["sagittal", "sagittal"],
  ["render", "3D"],
];
const TOOLS: [Tool, string, string][] = [
  ["navigate", "Navigate", "Left: move the crosshair; right drag: window/level; scroll: slices"],
  ["clicks", "Clicks", "Click on a slice: a point for the click-guided model"],
  ["paint", "Paint", "Paint the chosen label"],
  ["erase", "Erase", "Erase the chosen label only"],
];

export function windowPanel(ctx: Context): { element: HTMLElement; update: (width: number, level: number) => void } {
  const width = h("input", { type: "number", name: "window", step: "any", "aria-label": "Window width", size: 6 });
  const level = h("input", { type: "number", name: "level", step: "any", "aria-label": "Window level", size: 6 });
  const apply = () => {
    const w = Number(width.value);
    const l = Number(level.value);
    if (ctx.viewer.loaded && Number.isFinite(w) && w > 0 && Number.isFinite(l)) ctx.viewer.setWindow(w, l);
  };
  width.addEventListener("change", apply);
  level.addEventListener("change", apply);
  const preset = h(
    "select",
    {
      name: "preset",
      "aria-label": "Window preset",
      onchange: (event: Event) => {
        if (!ctx.viewer.loaded) return;
        const chosen = PRESETS[(event.target as HTMLSelectElement).value];
        if (chosen === null) ctx.viewer.autoWindow();
        else if (chosen) ctx.viewer.setWindow(...chosen);
      },
    },
    h("option", { value: "", disabled: true, selected: true }, "preset…"),
    Object.keys(PRESETS).map((name) => h("option", { value: name }, name)),
  );
  const view = h(
    "select",
    { name: "view", "aria-label": "View", onchange: (event: Event) => ctx.viewer.setView((event.target as HTMLSelectElement).value as View) },
    VIEWS.map(([value, text]) => h("option", { value }, text)),
  );
  const element = section(
    "Image",
    h("div", { class: "row" }, h("label", {}, "W ", width), h("label", {}, "L ", level), preset),
    h("div", { class: "row" }, h("label", {}, "View ", view)),
  );
  const update = (w: number, l: number) => {
    width.value = String(Number(w.toPrecision(4)));
    level.value = String(Number(l.toPrecision(4)));
  };
  return { element, update };
}

export class ToolPanel {
  readonly element: HTMLElement;
  private tool: Tool = "navigate";
  private chosen: Label;
  private readonly undoButton: HTMLButtonElement;
  private readonly toolButtons: Map<Tool, HTMLButtonElement> = new Map();
  private readonly swatches: HTMLElement[] = [];

  constructor(private readonly ctx: Context) {
    this.chosen = ctx.labels[0];
    const labels = h(
      "div",
      { class: "labels", role: "radiogroup", "aria-label": "Label" },
      ctx.labels.map((label, i) => {
        const swatch = h("span", { class: "swatch", "data-value": label.value });
        this.swatches.push(swatch);
        return h(
          "label",
          {},
          h("input", {
            type: "radio",
            name: "label",
            value: label.value,
            checked: i === 0,
            "data-label": label.name,
            onchange: () => this.choose(label),
          }),
          swatch,
          ` ${label.value} ${label.name}`,
        );
      }),
    );
    const tools = h(
      "div",
      { class: "row tools" },
      TOOLS.map(([tool, text, title]) => {
        const button = h("button", { type: "button", "data-tool": tool, title, onclick: () => this.use(tool) }, text);
        this.toolButtons.set(tool, button);
        return button;
      }),
    );
    const size = h("input", { type: "range", name: "pen_size", min: 1, max: 25, value: 1, "aria-label": "Pen size" });
    const filled = h("input", { type: "checkbox", name: "filled", "aria-label": "Fill the outline" });
    const pen = () => ctx.viewer.setPen(Number(size.value), filled.checked);
    size.addEventListener("input", pen);
    filled.addEventListener("change", pen);
    const opacity = h("input", { type: "range", name: "opacity", min: 0, max: 100, value: 50, "aria-label": "Overlay opacity" });
    opacity.addEventListener("input", () => ctx.viewer.setOpacity(Number(opacity.value) / 100));
    this.undoButton = h("button", { type: "button", "data-action": "undo", disabled: true, onclick: () => this.undo() }, "Undo");
    this.element = section(
      "Paint",
      labels,
      tools,
      h("div", { class: "row" }, h("label", {}, "pen ", size), h("label", {}, filled, " fill outline")),
      h("div", { class: "row" }, h("label", {}, "overlay ", opacity), this.undoButton),
    );
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "z" && !(event.target instanceof HTMLInputElement)) {
        event.preventDefault();
        this.undo();
      }
    });
    this.use("navigate");
  }

  get label(): Label {
    return this.chosen;
  }

  /** Colour the swatches as NiiVue draws each value (once it runs). */
  colour(): void {
    for (const swatch of this.swatches) swatch.style.background = this.ctx.viewer.color(Number(swatch.dataset.value));
  }

  use(tool: Tool): void {
    this.tool = tool;
    for (const [name, button] of this.toolButtons) button.setAttribute("aria-pressed", String(name === tool));
    this.ctx.viewer.setTool(tool, this.chosen.value);
  }

  /** The drawing changed: can it be undone now? */
  drawingChanged(): void {
    this.undoButton.disabled = !this.ctx.viewer.canUndo;
  }

  private choose(label: Label): void {
    this.chosen = label;
    this.ctx.viewer.setTool(this.tool, label.value);
  }

  private undo(): void {
    this.ctx.viewer.undo();
    this.drawingChanged();
  }
}
