// PACS: the DICOMweb link (GET /datastore/pacs, reviewers): its URL and last refresh, the SEGs
// written back and read, the series that cannot be used and why, and the SEGs needing attention
// (write-backs pending or refused, SEGs of the PACS that were not imported), each said once.
import { ApiError, type Info } from "../api";
import type { Context } from "../main";
import { duration, h, section, stat, table, when } from "../dom";
import { imageLink } from "./overview";

const REFRESH_MS = 15_000;

export interface PacsRefresh {
  added: number;
  unchanged: number;
  segs_imported: number;
  /** What this refresh newly found unusable: a series or a SEG instance, with the reason. */
  skipped: { uid: string; reason: string }[];
  finished_at: number;
}

export interface SkippedSeries {
  series_uid: string;
  study_uid: string;
  instances: number | null;
  reason: string;
  first_seen: number;
  last_seen: number;
}

export interface PacsSeg {
  seg_sop_instance_uid: string;
  seg_series_uid: string;
  /** ``out``: written back to the PACS; ``in``: read from it. */
  direction: "out" | "in" | string;
  state: "pending" | "failed" | "skipped" | string;
  image: string | null;
  tag: string | null;
  version: number | null;
  attempts: number;
  reason: string | null;
  created_at: number;
  updated_at: number;
  next_attempt_at: number | null;
}

export interface PacsStatus {
  url: string;
  last_refresh: PacsRefresh | null;
  skipped_series: SkippedSeries[];
  segs: { out: { pending: number; stored: number; failed: number }; in: { imported: number; skipped: number } };
  attention: PacsSeg[];
}

/**
 * Whether ``/info/`` says that this server reads a PACS (``"pacs": true`` or an object): true,
 * false, or undefined when it does not say. The dashboard asks nothing else to decide, so a
 * server without a PACS is never sent a request that fails (a 406 is an error in the console).
 */
export function pacsConnected(info: Info): boolean | undefined {
  const flag = (info as Info & { pacs?: unknown }).pacs;
  if (flag === undefined) return undefined;
  return flag === true || (typeof flag === "object" && flag !== null);
}

const STATE_CLASS: Record<string, string> = { pending: "running", failed: "error", skipped: "stopped" };
const DIRECTION: Record<string, string> = { out: "written back", in: "read" };

export async function pacsPage(ctx: Context): Promise<void> {
  const title = h("h1", {}, "PACS");
  if (!ctx.can("reviewer")) {
    ctx.page.replaceChildren(title, h("p", { class: "muted" }, "The PACS link is shown to reviewers"));
    ctx.ready();
    return;
  }
  const render = async (): Promise<boolean> => {
    let status: PacsStatus;
    try {
      status = await ctx.api.json<PacsStatus>("GET", "/datastore/pacs");
    } catch (error) {
      if (error instanceof ApiError && error.status === 406) {
        ctx.page.replaceChildren(title, h("p", { class: "muted", "data-testid": "no-pacs" }, error.detail));
        return false;
      }
      throw error;
    }
    const now = Date.now() / 1000;
    ctx.page.replaceChildren(
      title,
      link(status, now),
      segCounts(status),
      skippedSeries(status.skipped_series),
      attention(status.attention, now),
    );
    return true;
  };
  const connected = await render();
  ctx.ready();
  if (!connected) return;
  const timer = setInterval(() => {
    if (!document.hidden) void render().catch(() => {});
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
}

function uid(text: string, attrs: Record<string, string> = {}): HTMLElement {
  return h("span", { class: "uid", ...attrs }, text);
}

/** ``when(ts)`` with how long ago (or how soon) it is. */
function at(ts: number | null | undefined, now: number, field: string): HTMLElement {
  if (ts === null || ts === undefined) return h("span", { "data-field": field }, "–");
  const delta = ts - now;
  const rel = delta >= 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
  return h("span", { "data-field": field }, when(ts), " ", h("span", { class: "muted small" }, `(${rel})`));
}

function link(status: PacsStatus, now: number): HTMLElement {
  const last = status.last_refresh;
  return section(
    "Link",
    h("p", {}, "DICOMweb root ", h("code", { "data-testid": "pacs-url" }, status.url)),
    last === null
      ? h("p", { class: "muted", "data-testid": "last-refresh" }, "No refresh has finished yet")
      : h(
          "div",
          { "data-testid": "last-refresh" },
          h("p", {}, "Last refresh ", at(last.finished_at, now, "finished_at")),
          h(
            "div",
            { class: "stats" },
            stat("series added", last.added, "refresh-added"),
            stat("series unchanged", last.unchanged, "refresh-unchanged"),
            stat("SEGs imported", last.segs_imported, "refresh-segs-imported"),
            stat("newly skipped", last.skipped.length, "refresh-skipped"),
          ),
        ),
  );
}

function segCounts(status: PacsStatus): HTMLElement {
  const { out, in: read } = status.segs;
  return section(
    "SEGs",
    h("h3", { class: "sub small muted" }, "Written back to the PACS"),
    h(
      "div",
      { class: "stats" },
      stat("stored", out.stored ?? 0, "out-stored"),
      stat("pending", out.pending ?? 0, "out-pending", "sent again with back-off"),
      stat("failed", out.failed ?? 0, "out-failed", "refused by the PACS"),
    ),
    h("h3", { class: "sub small muted" }, "Read from the PACS"),
    h(
      "div",
      { class: "stats" },
      stat("imported", read.imported ?? 0, "in-imported", "became label versions"),
      stat("skipped", read.skipped ?? 0, "in-skipped", "not imported, read once"),
    ),
  );
}

function skippedSeries(series: SkippedSeries[]): HTMLElement {
  return section(
    "Series that cannot be used",
    h("p", { class: "muted small" }, "Looked at again only when their number of instances changes."),
    table(
      ["series", "reason", "instances", "first seen", "last seen"],
      series.map((s) => [
        uid(s.series_uid, { "data-series": s.series_uid, title: `study ${s.study_uid}` }),
        h("span", { "data-field": "reason" }, s.reason),
        h("span", { "data-field": "instances" }, s.instances ?? "–"),
        when(s.first_seen),
        when(s.last_seen),
      ]),
      "Every series of the PACS can be used",
    ),
  );
}

function attention(segs: PacsSeg[], now: number): HTMLElement {
  return section(
    "SEGs needing attention",
    table(
      ["direction", "state", "image", "label", "reason", "attempts", "next try", "SEG instance"],
      segs.map((s) => [
        h("span", { "data-field": "direction" }, DIRECTION[s.direction] ?? s.direction),
        h("span", { class: `status ${STATE_CLASS[s.state] ?? ""}`, "data-field": "state" }, s.state),
        s.image ? imageLink(s.image) : "–",
        s.tag !== null && s.version !== null ? `${s.tag} v${s.version}` : "–",
        h("span", { "data-field": "reason" }, s.reason ?? "–"),
        h("span", { "data-field": "attempts" }, s.attempts),
        s.direction === "out" && s.state === "pending" ? at(s.next_attempt_at, now, "next_attempt_at") : "–",
        uid(s.seg_sop_instance_uid, { "data-seg": s.seg_sop_instance_uid, title: `series ${s.seg_series_uid}` }),
      ]),
      "No SEG needs attention: every write-back is stored and every SEG of the PACS imported",
    ),
  );
}
