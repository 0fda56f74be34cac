// Progress: images, labelled, final and per tag; final labels over time; each annotator's work;
// the cases held now; the latest label saves.
import type { Lease, Progress } from "../api";
import { COLORS, lineChart } from "../charts";
import type { Context } from "../main";
import { duration, h, section, stat, table, when } from "../dom";

const REFRESH_MS = 15_000;

export async function overviewPage(ctx: Context): Promise<void> {
  // The figures refresh themselves; the latest saves are read once per visit (reading the label
  // history is recorded in the audit trail, which a timer should not fill).
  const recent = await ctx.api.labelVersions(undefined, 15);
  const render = async () => {
    const reviewer = ctx.can("reviewer");
    const [progress, stats, leases] = await Promise.all([
      reviewer ? ctx.api.progress() : null,
      reviewer ? null : ctx.api.stats(),
      reviewer ? ctx.api.leases() : null,
    ]);
    const images = progress ? progress.images : (stats?.total ?? 0);
    const final = progress ? progress.final : (stats?.completed ?? 0);
    const tags = progress ? progress.label_tags : (stats?.label_tags ?? {});
    const percent = images ? `${Math.round((100 * final) / images)} % of the images` : undefined;
    const figures = section(
      "Progress",
      h(
        "div",
        { class: "stats" },
        stat("images", images, "images"),
        stat("labelled", progress ? progress.labelled : "–", "labelled", progress ? undefined : "reviewers see this"),
        stat("final", final, "final", percent),
      ),
      table(
        ["tag", "labels"],
        Object.entries(tags).map(([tag, count]) => [tag, h("span", { "data-tag": tag }, count)]),
        "No labels yet",
      ),
    );
    const parts: HTMLElement[] = [figures];
    if (progress) {
      const over = section("Final labels over time");
      parts.push(over, annotators(progress), leasesNow(leases ?? []));
      ctx.page.replaceChildren(...parts, latest(recent));
      finalsChart(over, progress);
    } else {
      ctx.page.replaceChildren(...parts, latest(recent));
    }
  };
  await render();
  ctx.ready();
  const timer = setInterval(() => {
    if (!document.hidden) void render().catch(() => {});
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
}

function finalsChart(box: HTMLElement, progress: Progress): void {
  const days = progress.finals_by_day;
  if (days.length === 0) {
    box.append(h("p", { class: "muted" }, "No final labels yet"));
    return;
  }
  // A running total: from zero the day before the first, to the current count now.
  const x = [days[0].day_ts - 86400, ...days.map((d) => d.day_ts), progress.ts];
  const total = [0, ...days.map((d) => d.total), progress.final];
  lineChart(box, {
    x,
    time: true,
    stepped: true,
    yLabel: "images with a final label",
    series: [{ label: "final labels", values: total, color: COLORS[0] }],
  });
}

function annotators(progress: Progress): HTMLElement {
  return section(
    "Annotators",
    table(
      ["annotator", "labels saved", "final labels", "cases held now", "median hand-out to save"],
      progress.annotators.map((a) => [
        h("span", { "data-annotator": a.name }, a.name),
        h("span", { "data-field": "labels_saved" }, a.labels_saved),
        h("span", { "data-field": "final_labels" }, a.final_labels),
        h("span", { "data-field": "holding" }, a.holding),
        h("span", { "data-field": "median" }, duration(a.median_handout_to_save_s)),
      ]),
      "Nobody has saved a label or taken a case yet",
    ),
  );
}

function leasesNow(leases: Lease[]): HTMLElement {
  return section(
    "Cases held now",
    table(
      ["image", "held by", "strategy", "since", "runs out"],
      leases.map((l) => [imageLink(l.image), l.holder, l.strategy, when(l.created_ts), when(l.expires_ts)]),
      "No case is leased",
    ),
  );
}

function latest(recent: Awaited<ReturnType<Context["api"]["labelVersions"]>>): HTMLElement {
  return section(
    "Latest label saves",
    table(
      ["saved", "image", "tag", "version", "by", "client"],
      recent.map((v) => [when(v.ts), imageLink(v.image), v.tag, v.version, v.author, v.client_id ?? "–"]),
      "No label saved yet",
    ),
  );
}

export function imageLink(image: string): HTMLElement {
  return h("a", { href: `#/image/${encodeURIComponent(image)}` }, image);
}
