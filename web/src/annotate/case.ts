// The case: the next one by a strategy (leased to the annotator) or one image by its id, shown with
// its current final label; the time from "Next case" to the image on screen is measured.
import type { LabelVersion } from "../api";
import { h, section, when } from "../dom";
import { type Case, type Context, fileName, withClient } from "./context";

const NEXT_MARK = "labelloop:annotate:next";
const SHOWN_MARK = "labelloop:annotate:shown";

interface NextSample {
  id?: string;
  name?: string;
  lease?: { holder: string; expires_ts: number };
  reason?: string;
}

/** The current ``final`` label version of ``image``, or null (the history, so that no 404 is asked for). */
export async function currentLabel(ctx: Context, image: string): Promise<LabelVersion | null> {
  const query = new URLSearchParams({ image, tag: "final", limit: "1" });
  const [newest] = await ctx.api.json<LabelVersion[]>("GET", `/datastore/label/versions?${query}`);
  return newest ?? null;
}

/** Load ``version`` of ``image``'s final label into the drawing (undo starts from it). */
export async function loadLabel(ctx: Context, image: string, version: LabelVersion): Promise<void> {
  const query = new URLSearchParams({ label: image, tag: "final", version: String(version.version) });
  const answer = await ctx.api.request("GET", `/datastore/label?${query}`);
  const drawing = await ctx.viewer.fromFile(await answer.arrayBuffer(), fileName(answer, version.name));
  ctx.viewer.resetDrawing(drawing);
  if (ctx.current?.image === image) {
    ctx.current.label = { version: version.version, etag: version.etag, author: version.author };
    ctx.current.model = null;
  }
}

export class CasePanel {
  readonly element: HTMLElement;
  /** Called once a case is on screen with its label. */
  onOpen: (current: Case) => void = () => {};
  private readonly strategy: HTMLSelectElement;
  private readonly reason: HTMLInputElement;
  private readonly facts = h("div", { "data-testid": "case" }, h("p", { class: "muted" }, "No case open"));
  private readonly buttons: HTMLButtonElement[];

  constructor(private readonly ctx: Context) {
    const strategies = Object.entries(ctx.info.strategies ?? { random: {} });
    this.strategy = h(
      "select",
      { name: "strategy", "aria-label": "Strategy" },
      strategies.map(([name, s]) => h("option", { value: name, title: s.description ?? "" }, name)),
    );
    this.reason = h("input", { name: "skip_reason", placeholder: "why skip (optional)", "aria-label": "Why skip" });
    const next = h("button", { type: "button", "data-action": "next", onclick: () => void this.next(false) }, "Next case");
    const skip = h("button", { type: "button", "data-action": "skip", onclick: () => void this.next(true) }, "Skip");
    this.buttons = [next, skip];
    this.element = section(
      "Case",
      h("div", { class: "row" }, this.strategy, next),
      h("div", { class: "row" }, this.reason, skip),
      this.facts,
    );
  }

  /** Take the next case by the chosen strategy (your open lease if you hold one), or skip the open one. */
  async next(skip: boolean): Promise<void> {
    performance.clearMarks(NEXT_MARK);
    performance.mark(NEXT_MARK);
    const params: Record<string, unknown> = skip ? { skip: true, skip_reason: this.reason.value.trim() || undefined } : {};
    await this.busy(async () => {
      const sample = await this.ctx.api.json<NextSample>(
        "POST",
        `/activelearning/${encodeURIComponent(this.strategy.value)}`,
        withClient(this.ctx, params),
      );
      if (!sample.id) {
        this.facts.replaceChildren(h("p", { class: "muted", "data-testid": "none-left" }, "No image is left to annotate."));
        this.ctx.say("No image is left to annotate by this strategy.");
        return;
      }
      this.reason.value = "";
      await this.open(sample.id, sample.lease ?? null, sample.reason ?? null, true);
    });
  }

  /** Show ``image`` and its current final label. */
  async open(image: string, lease: Case["lease"], reason: string | null, timed = false): Promise<void> {
    const ctx = this.ctx;
    if (!timed) {
      performance.clearMarks(NEXT_MARK);
      performance.mark(NEXT_MARK);
    }
    const [answer, label] = await Promise.all([
      ctx.api.request("GET", `/datastore/image?${new URLSearchParams({ image })}`),
      currentLabel(ctx, image),
    ]);
    const name = fileName(answer, `${image}.nii.gz`);
    await ctx.viewer.show(await answer.arrayBuffer(), name);
    const current: Case = { image, name, lease, reason, label: null, model: null };
    ctx.current = current;
    // Shown: NiiVue has drawn it; the next frame is on screen.
    await new Promise(requestAnimationFrame);
    performance.clearMarks(SHOWN_MARK);
    performance.mark(SHOWN_MARK);
    const took = performance.measure("labelloop:annotate:next-to-image", NEXT_MARK, SHOWN_MARK).duration;
    if (label) await loadLabel(ctx, image, label);
    this.show(current, took);
    this.onOpen(current);
  }

  private show(current: Case, took: number): void {
    const { dims, voxelMl } = this.ctx.viewer.shape;
    const lease = current.lease
      ? h("span", { "data-testid": "lease" }, `held by ${current.lease.holder} until ${when(current.lease.expires_ts)}`)
      : h("span", { class: "muted", "data-testid": "lease" }, "not leased to you (opened by its id)");
    const label = current.label
      ? `final label version ${current.label.version} by ${current.label.author}`
      : "no final label yet";
    this.facts.replaceChildren(
      h("p", {}, h("strong", { "data-testid": "image" }, current.image), " ", lease),
      current.reason ? h("p", { class: "muted small" }, current.reason) : "",
      h("p", { class: "muted small" }, `${dims.join(" × ")} voxels of ${(voxelMl * 1000).toFixed(2)} mm³; `, h("span", { "data-testid": "label-state" }, label)),
      h("p", { class: "muted small" }, "shown in ", h("span", { "data-testid": "load-ms" }, Math.round(took)), " ms"),
    );
  }

  /** Say which final label version the drawing now stands on (after a save or a reload). */
  labelChanged(): void {
    const current = this.ctx.current;
    const state = this.facts.querySelector('[data-testid="label-state"]');
    if (current && state) {
      state.textContent = current.label
        ? `final label version ${current.label.version} by ${current.label.author}`
        : "no final label yet";
    }
  }

  private async busy(work: () => Promise<void>): Promise<void> {
    for (const b of this.buttons) b.disabled = true;
    try {
      await work();
    } catch (error) {
      this.ctx.say(`Could not open the case: ${error instanceof Error ? error.message : String(error)}`, true);
    } finally {
      for (const b of this.buttons) b.disabled = false;
    }
  }
}
