// Save the drawing as a new version of the image's final label, conditionally: If-Match with the
// version it started from, or If-None-Match: * when there was none. A 409 opens a dialog that says
// who saved in between and offers to reload their label (or to save this one over it).
import { ApiError, type LabelVersion } from "../api";
import { h, section, when } from "../dom";
import { currentLabel, loadLabel } from "./case";
import { type Context, withClient } from "./context";

interface Saved {
  version: number;
  etag: string;
  lease_ended?: boolean;
}

export class SavePanel {
  readonly element: HTMLElement;
  /** The drawing now stands on another label version (saved or reloaded). */
  onSaved: () => void = () => {};
  private readonly button: HTMLButtonElement;
  private readonly message = h("div", { class: "message", "data-testid": "save-message" });
  private readonly dialog: HTMLDialogElement;
  private readonly dialogText = h("div", { "data-testid": "conflict-detail" });
  private newest: LabelVersion | null = null;

  constructor(private readonly ctx: Context) {
    this.button = h("button", { type: "button", class: "primary", "data-action": "save", onclick: () => void this.save() }, "Save as a new version");
    this.element = section("Save", h("p", { class: "muted small" }, "Saves the drawing as the image's final label."), this.button, this.message);
    this.dialog = h(
      "dialog",
      { class: "conflict", "data-testid": "conflict" },
      h("h2", {}, "Someone saved this label in between"),
      this.dialogText,
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "primary", "data-action": "reload", onclick: () => void this.reload() }, "Reload their label"),
        h("button", { type: "button", "data-action": "overwrite", onclick: () => void this.save(true) }, "Save mine over it"),
        h("button", { type: "button", "data-action": "cancel", onclick: () => this.dialog.close() }, "Keep editing"),
      ),
    );
    document.body.append(this.dialog);
  }

  /** Save the drawing; ``over`` saves it on top of the version the conflict dialog showed. */
  async save(over = false): Promise<void> {
    const ctx = this.ctx;
    const current = ctx.current;
    if (!current) return;
    const base = over && this.newest ? { etag: this.newest.etag } : current.label;
    this.dialog.close();
    this.button.disabled = true;
    try {
      const form = new FormData();
      form.append("label", await ctx.viewer.toFile(), `${current.image}.nii.gz`);
      const labelInfo = ctx.labels.map((l) => ({ name: l.name, idx: l.value }));
      const params: Record<string, unknown> = { label_info: labelInfo };
      if (current.model) {
        params.model = current.model.name;
        if (current.model.version !== null) params.model_version = current.model.version;
      }
      form.append("params", JSON.stringify(withClient(ctx, params)));
      const headers: Record<string, string> = base ? { "If-Match": base.etag } : { "If-None-Match": "*" };
      const query = new URLSearchParams({ image: current.image, tag: "final" });
      const answer = await ctx.api.send("PUT", `/datastore/label?${query}`, form, headers);
      const saved = (await answer.json()) as Saved;
      // The author is who the server says saved it (with auth off, its configured user).
      const stored = await currentLabel(ctx, current.image);
      const author = stored?.version === saved.version ? stored.author : "you";
      current.label = { version: saved.version, etag: saved.etag, author };
      this.newest = null;
      const ended = saved.lease_ended ? "; your lease on the case ended" : "";
      this.message.replaceChildren(h("p", { class: "ok", role: "status", "data-version": saved.version }, `Saved version ${saved.version}${ended}.`));
      this.onSaved();
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        await this.conflict(current.image, error.detail);
      } else {
        this.message.replaceChildren(h("p", { class: "error", role: "alert" }, `Not saved: ${error instanceof Error ? error.message : String(error)}`));
      }
    } finally {
      this.button.disabled = false;
    }
  }

  private async conflict(image: string, detail: string): Promise<void> {
    this.newest = await currentLabel(this.ctx, image);
    const who = this.newest
      ? h(
          "p",
          { "data-testid": "conflict-who" },
          `Version ${this.newest.version} was saved by `,
          h("strong", {}, this.newest.author),
          this.newest.client_id && this.newest.client_id !== this.newest.author ? ` (${this.newest.client_id})` : "",
          ` at ${when(this.newest.ts)}.`,
        )
      : null;
    this.dialogText.replaceChildren(h("p", { class: "muted small" }, detail), who ?? "");
    this.message.replaceChildren(h("p", { class: "error", role: "alert" }, "Not saved: the label changed since you opened it."));
    this.dialog.showModal();
  }

  /** Replace the drawing with the label saved in between. */
  private async reload(): Promise<void> {
    const current = this.ctx.current;
    this.dialog.close();
    if (!current) return;
    const newest = this.newest ?? (await currentLabel(this.ctx, current.image));
    if (!newest) return;
    await loadLabel(this.ctx, current.image, newest);
    this.newest = null;
    this.message.replaceChildren(h("p", { class: "ok", role: "status" }, `Reloaded version ${newest.version} by ${newest.author}.`));
    this.onSaved();
  }
}
