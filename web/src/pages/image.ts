// One image: its label versions with their provenance, a download of any version, its leases.
import { ApiError } from "../api";
import type { Context } from "../main";
import { bytes, h, say, section, table, when } from "../dom";

export async function imagePage(ctx: Context, image: string): Promise<void> {
  const message = h("div", { class: "message" });
  const [versions, leases] = await Promise.all([
    ctx.api.labelVersions(image, 1000),
    ctx.can("reviewer") ? ctx.api.leases() : null,
  ]);
  const download = async (tag: string, version: number) => {
    try {
      const file = await ctx.api.labelFile(image, tag, version);
      const url = URL.createObjectURL(file.blob);
      const a = h("a", { href: url, download: file.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      say(message, `Downloaded ${file.name}`);
    } catch (error) {
      say(message, error instanceof ApiError ? error.detail : String(error), true);
    }
  };
  const mine = (leases ?? []).filter((l) => l.image === image);
  ctx.page.replaceChildren(
    h("h1", {}, "Image ", h("span", { "data-testid": "image-id" }, image)),
    h("p", {}, h("a", { href: `/annotate/#/image/${encodeURIComponent(image)}`, "data-testid": "annotate-link" }, "Open in the annotator")),
    message,
    section(
      "Label versions",
      table(
        ["tag", "version", "author", "client", "saved", "parent", "started from", "source", "size", ""],
        versions.map((v) => [
          v.tag,
          v.version,
          v.author,
          v.client_id ?? "–",
          when(v.ts),
          v.parent_version ?? "–",
          v.model ? `${v.model}${v.model_version !== null ? ` v${v.model_version}` : ""}` : "–",
          v.source,
          bytes(v.size_bytes),
          h(
            "button",
            { type: "button", "data-action": "download", "data-tag": v.tag, "data-version": v.version, onclick: () => download(v.tag, v.version) },
            "Download",
          ),
        ]),
        "No label saved for this image yet",
      ),
    ),
    leases === null
      ? ""
      : section(
          "Leases",
          table(
            ["held by", "strategy", "since", "runs out"],
            mine.map((l) => [l.holder, l.strategy, when(l.created_ts), when(l.expires_ts)]),
            "Nobody holds this image now",
          ),
        ),
  );
  ctx.ready();
}
