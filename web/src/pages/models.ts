// Models: every version with its metrics (a chart over versions), which one is active, and for
// admins promote (activate any version) and roll back (to the version before the active one).
import { ApiError, type ModelVersion } from "../api";
import { COLORS, lineChart } from "../charts";
import type { Context } from "../main";
import { bytes, h, num, say, section, table, when } from "../dom";

export async function modelsPage(ctx: Context): Promise<void> {
  const admin = ctx.can("admin");
  const message = h("div", { class: "message", "data-testid": "models-message" });
  const list = h("div");

  const render = async () => {
    const info = await ctx.api.info();
    const names = Object.keys(info.models);
    const all = await Promise.all(names.map((name) => ctx.api.versions(name)));
    const cards: HTMLElement[] = [];
    const none: string[] = [];
    names.forEach((name, i) => {
      if (all[i].length === 0) none.push(name);
      else cards.push(modelCard(name, all[i], admin, act));
    });
    list.replaceChildren(
      ...cards,
      none.length ? h("p", { class: "muted" }, `No versions yet: ${none.join(", ")}`) : "",
    );
    for (const card of cards) drawMetrics(card, all[names.indexOf(card.dataset.model ?? "")]);
  };

  const act = async (what: () => Promise<string>) => {
    try {
      say(message, await what());
    } catch (error) {
      say(message, error instanceof ApiError ? error.detail : String(error), true);
    }
    await render();
  };

  ctx.page.replaceChildren(message, list);
  await render();
  ctx.ready();

  function modelCard(
    name: string,
    versions: ModelVersion[],
    canChange: boolean,
    run: (what: () => Promise<string>) => Promise<void>,
  ): HTMLElement {
    const active = versions.find((v) => v.active);
    const older = active ? versions.filter((v) => v.version < active.version).sort((a, b) => b.version - a.version)[0] : undefined;
    const activate = (v: ModelVersion, verb: string) => () =>
      run(async () => {
        const done = await ctx.api.activate(name, v.version);
        return `${verb}: ${name} version ${done.version} is active`;
      });
    const card = section(
      `Model ${name}`,
      h(
        "p",
        {},
        "Active: ",
        h("strong", { "data-testid": `active-${name}` }, active ? `version ${active.version}` : "none"),
        canChange && older
          ? h("button", { type: "button", "data-action": "rollback", onclick: activate(older, "Rolled back") }, `Roll back to version ${older.version}`)
          : "",
      ),
      h("div", { class: "metrics-chart" }),
      table(
        ["version", "active", "source", "by", "created", "metrics", "size", ""],
        versions.map((v) => [
          v.version,
          v.active ? h("span", { class: "status done" }, "active") : "",
          v.source,
          v.created_by,
          when(v.created_ts),
          Object.entries(numeric(v.metrics))
            .map(([k, x]) => `${k} ${num(x)}`)
            .join(", ") || "–",
          bytes(v.size_bytes),
          canChange && !v.active
            ? h("button", { type: "button", "data-action": "activate", "data-version": v.version, onclick: activate(v, "Promoted") }, "Activate")
            : "",
        ]),
      ),
    );
    card.dataset.model = name;
    return card;
  }
}

function drawMetrics(card: HTMLElement, versions: ModelVersion[]): void {
  const box = card.querySelector(".metrics-chart") as HTMLElement;
  const ordered = [...versions].sort((a, b) => a.version - b.version);
  const keys = [...new Set(ordered.flatMap((v) => Object.keys(numeric(v.metrics))))].sort();
  if (keys.length === 0) {
    box.append(h("p", { class: "muted" }, "No metrics recorded (uploaded weights carry none; trained versions do)"));
    return;
  }
  lineChart(box, {
    x: ordered.map((v) => v.version),
    time: false,
    xLabel: "version",
    series: keys.map((key, i) => ({
      label: key,
      values: ordered.map((v) => numeric(v.metrics)[key] ?? null),
      color: COLORS[i % COLORS.length],
    })),
  });
}

/** A version's numeric metrics, nested ones as ``group.name``. */
function numeric(metrics: Record<string, unknown>, prefix = ""): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(metrics)) {
    if (typeof value === "number" && Number.isFinite(value)) out[prefix + key] = value;
    else if (value && typeof value === "object" && !Array.isArray(value) && !prefix) {
      Object.assign(out, numeric(value as Record<string, unknown>, `${key}.`));
    }
  }
  return out;
}
