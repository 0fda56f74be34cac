// Run a model on the open image: automatic ones on the whole image, click-guided ones (deepgrow,
// deepedit) with the foreground and background clicks made with the Clicks tool. The result goes
// into the drawing, where the annotator corrects it.
import type { ModelInfo } from "../api";
import { h, section } from "../dom";
import { type Context, withClient } from "./context";
import type { Voxel } from "./geometry";
import { labelsOf } from "./labels";

/** Model types that take clicks (MONAI Label's interactive ones). */
const CLICK_GUIDED = new Set(["deepgrow", "deepedit"]);

export function isClickGuided(model: ModelInfo | undefined): boolean {
  return model !== undefined && CLICK_GUIDED.has(model.type);
}

export class ModelPanel {
  readonly element: HTMLElement;
  /** The drawing changed because of a run. */
  onResult: () => void = () => {};
  private readonly model: HTMLSelectElement;
  private readonly run: HTMLButtonElement;
  private readonly clicksBox = h("div", { class: "clicks" });
  private readonly status = h("p", { class: "muted small", "data-testid": "model-status" });
  private readonly kind: HTMLSelectElement;
  private foreground: Voxel[] = [];
  private background: Voxel[] = [];

  constructor(private readonly ctx: Context) {
    const models = Object.entries(ctx.info.models);
    this.model = h(
      "select",
      { name: "model", "aria-label": "Model", onchange: () => this.render() },
      models.map(([name, m]) =>
        h(
          "option",
          { value: name, disabled: m.state === "untrained", title: m.description ?? "" },
          `${name} (${isClickGuided(m) ? "clicks" : "automatic"}${m.state === "untrained" ? ", untrained" : ""})`,
        ),
      ),
    );
    const ready = models.find(([, m]) => m.state !== "untrained");
    if (ready) this.model.value = ready[0];
    this.kind = h(
      "select",
      { name: "click_kind", "aria-label": "Click kind" },
      h("option", { value: "foreground" }, "foreground"),
      h("option", { value: "background" }, "background"),
    );
    this.run = h("button", { type: "button", "data-action": "run", onclick: () => void this.infer() }, "Run");
    this.element = section("Model", h("div", { class: "row" }, this.model, this.run), this.clicksBox, this.status);
    this.render();
  }

  private get spec(): ModelInfo | undefined {
    return this.ctx.info.models[this.model.value];
  }

  /** A click made with the Clicks tool (the file's voxel). */
  click(voxel: Voxel): void {
    if (!isClickGuided(this.spec)) {
      this.ctx.say("The chosen model takes no clicks: pick a click-guided one.");
      return;
    }
    (this.kind.value === "background" ? this.background : this.foreground).push(voxel);
    this.render();
  }

  /** A new case: no clicks yet. */
  reset(): void {
    this.foreground = [];
    this.background = [];
    this.status.textContent = "";
    this.render();
  }

  private render(): void {
    this.run.disabled = !this.ctx.current || this.spec === undefined || this.spec.state === "untrained";
    if (!isClickGuided(this.spec)) {
      this.clicksBox.replaceChildren(h("p", { class: "muted small" }, "Runs on the whole image; the result replaces the drawing."));
      return;
    }
    const item = (kind: string, v: Voxel) => h("li", { "data-click": kind }, `${kind} (${v.join(", ")})`);
    this.clicksBox.replaceChildren(
      h("p", { class: "muted small" }, "With the Clicks tool, click on a slice; the result becomes the chosen label."),
      h("div", { class: "row" }, h("label", {}, "next click ", this.kind), h("button", { type: "button", "data-action": "clear-clicks", onclick: () => this.reset() }, "Clear")),
      h(
        "ul",
        { class: "small", "data-testid": "clicks" },
        this.foreground.map((v) => item("foreground", v)),
        this.background.map((v) => item("background", v)),
      ),
    );
    this.run.disabled ||= this.foreground.length === 0 && this.spec?.type === "deepgrow";
  }

  private params(): Record<string, unknown> {
    const params: Record<string, unknown> = { result_extension: ".nii.gz", result_dtype: "uint8" };
    const spec = this.spec;
    if (!isClickGuided(spec)) return params;
    const label = this.ctx.label();
    if (spec?.type === "deepedit") {
      // DeepEdit takes each label's clicks under its name, and background clicks as "background".
      return { ...params, label: label.name, [label.name]: this.foreground, background: this.background };
    }
    return { ...params, label: label.name, foreground: this.foreground, background: this.background };
  }

  private async infer(): Promise<void> {
    const ctx = this.ctx;
    const current = ctx.current;
    if (!current) return;
    const name = this.model.value;
    const form = new FormData();
    form.append("params", JSON.stringify(withClient(ctx, this.params())));
    this.run.disabled = true;
    this.status.textContent = `${name} is running…`;
    const started = performance.now();
    try {
      const query = new URLSearchParams({ image: current.image, output: "all" });
      const answer = await ctx.api.send("POST", `/infer/${encodeURIComponent(name)}?${query}`, form);
      const parts = await answer.formData();
      const body = JSON.parse(String(parts.get("params") ?? "{}")) as { label_names?: unknown; model_version?: number | null };
      const file = parts.get("image");
      if (!(file instanceof File)) throw new Error("the answer holds no label file");
      if (ctx.current !== current) return; // the annotator moved on
      const result = await ctx.viewer.fromFile(await file.arrayBuffer(), file.name || "result.nii.gz");
      ctx.viewer.setDrawing(this.merge(result, body.label_names));
      current.model = { name, version: body.model_version ?? null };
      this.status.textContent = `${name} answered in ${((performance.now() - started) / 1000).toFixed(1)} s`;
      this.onResult();
    } catch (error) {
      this.status.textContent = "";
      ctx.say(`${name} failed: ${error instanceof Error ? error.message : String(error)}`, true);
    } finally {
      this.render();
    }
  }

  /** The drawing with the result in it: a click-guided result (one structure) becomes the chosen
   * label, in place of what that label held; any other result replaces the drawing, its values
   * mapped to the app's labels by name. */
  private merge(result: Uint8Array, names: unknown): Uint8Array {
    const drawing = this.ctx.viewer.drawing;
    if (isClickGuided(this.spec) && this.spec?.type !== "deepedit") {
      const value = this.ctx.label().value;
      const merged = drawing.slice();
      for (let i = 0; i < merged.length; i++) {
        if (result[i] > 0) merged[i] = value;
        else if (merged[i] === value) merged[i] = 0;
      }
      return merged;
    }
    const lut = Uint8Array.from({ length: 256 }, (_, v) => v);
    const byName = new Map(this.ctx.labels.map((l) => [l.name, l.value]));
    for (const { name, value } of labelsOf(names)) lut[value] = byName.get(name) ?? value;
    return result.map((v) => lut[v]);
  }
}
