// Jobs: the queued and running ones with a live progress bar and loss / validation Dice curves,
// the history, and for admins start, stop and re-run with the same parameters.
import type uPlot from "uplot";
import { ApiError, type JobKind, type Task } from "../api";
import { COLORS, type ChartSpec, lineChart, updateChart } from "../charts";
import type { Context } from "../main";
import { duration, h, num, say, section, table } from "../dom";

const KINDS: JobKind[] = ["train", "scoring", "batch_infer"];
/** How often the list is read while a job is queued or running, and otherwise. */
const POLL_MS = 2000;
const IDLE_POLL_MS = 10_000;
const ACTIVE = new Set(["SUBMITTED", "RUNNING"]);

/** Loss and validation Dice of a running task, one point per step seen while polling. */
interface Curve {
  x: number[];
  loss: (number | null)[];
  dice: (number | null)[];
  plot?: uPlot;
}

export async function jobsPage(ctx: Context): Promise<void> {
  const admin = ctx.can("admin");
  const message = h("div", { class: "message", "data-testid": "jobs-message" });
  const active = h("div", { "data-testid": "active-jobs" });
  const history = h("div", { "data-testid": "job-history" });
  const curves = new Map<string, Curve>();
  const cards = new Map<string, HTMLElement>();

  const act = async (what: () => Promise<string>) => {
    try {
      say(message, await what());
    } catch (error) {
      say(message, error instanceof ApiError ? error.detail : String(error), true);
    }
    await refresh();
  };

  let busy = false;
  const refresh = async () => {
    const tasks = (await Promise.all(KINDS.map((kind) => ctx.api.tasks(kind)))).flat();
    tasks.sort((a, b) => b.start_ts.localeCompare(a.start_ts));
    const running = tasks.filter((t) => ACTIVE.has(t.status));
    busy = running.length > 0;
    for (const [id, card] of cards) {
      if (!running.some((t) => t.id === id)) {
        card.remove();
        cards.delete(id);
        curves.delete(id);
      }
    }
    if (running.length === 0) active.replaceChildren(h("p", { class: "muted" }, "No job is queued or running"));
    else active.querySelector(":scope > p.muted")?.remove();
    for (const task of running) {
      let card = cards.get(task.id);
      if (!card) {
        card = h("div", { class: "job", "data-task": task.id });
        cards.set(task.id, card);
        active.append(card);
      }
      drawActive(card, task, curves, admin, act, ctx);
    }
    history.replaceChildren(
      table(
        ["kind", "name", "parameters", "status", "by", "started", "ended", "outcome", ""],
        tasks
          .filter((t) => !ACTIVE.has(t.status))
          .map((t) => [
            t.kind,
            t.name,
            h("code", { class: "small" }, JSON.stringify(sameParams(t))),
            h("span", { class: `status ${t.status.toLowerCase()}` }, t.status),
            t.created_by ?? "–",
            t.start_ts,
            t.end_ts ?? "–",
            outcome(t),
            admin
              ? h(
                  "button",
                  {
                    type: "button",
                    "data-action": "rerun",
                    onclick: () => act(async () => `Started ${(await ctx.api.start(t.kind, t.name, sameParams(t))).id}`),
                  },
                  "Re-run",
                )
              : "",
          ]),
        "No finished job yet",
      ),
    );
  };

  const parts: HTMLElement[] = [section("Queued and running", active)];
  if (admin) parts.unshift(await startForm(ctx, act));
  parts.push(section("History", history));
  ctx.page.replaceChildren(message, ...parts);
  await refresh();
  ctx.ready();
  let timer = 0;
  let last = Date.now();
  let gone = false;
  const poll = async () => {
    if (!document.hidden && Date.now() - last >= (busy ? POLL_MS : IDLE_POLL_MS) - 50) {
      last = Date.now();
      await refresh().catch(() => {});
    }
    if (!gone) timer = window.setTimeout(poll, POLL_MS);
  };
  timer = window.setTimeout(poll, POLL_MS);
  ctx.onLeave(() => {
    gone = true;
    clearTimeout(timer);
  });
}

async function startForm(ctx: Context, act: (what: () => Promise<string>) => Promise<void>): Promise<HTMLElement> {
  const info = await ctx.api.info();
  const trainers = Object.keys(info.trainers);
  const select = h("select", { name: "trainer", "aria-label": "Trainer" }, trainers.map((t) => h("option", { value: t }, t)));
  const params = h("textarea", { name: "params", rows: 3, cols: 50, "aria-label": "Parameters (JSON)" }, "{}");
  const defaults = h("p", { class: "muted small" });
  const showDefaults = () => {
    const config = info.trainers[select.value]?.config ?? {};
    defaults.textContent = `Options and their defaults: ${JSON.stringify(config)}`;
  };
  select.addEventListener("change", showDefaults);
  showDefaults();
  const start = () =>
    act(async () => {
      let body: unknown;
      try {
        body = JSON.parse(params.value || "{}");
      } catch {
        throw new Error("The parameters are not JSON");
      }
      if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("The parameters must be a JSON object");
      const task = await ctx.api.start("train", select.value, body as Record<string, unknown>);
      return `Started ${task.name} training ${task.id}`;
    });
  return section(
    "Start a training",
    h("div", { class: "row" }, select, params, h("button", { type: "button", "data-action": "start", onclick: start }, "Start training")),
    defaults,
  );
}

function drawActive(
  card: HTMLElement,
  task: Task,
  curves: Map<string, Curve>,
  admin: boolean,
  act: (what: () => Promise<string>) => Promise<void>,
  ctx: Context,
): void {
  const p = task.progress ?? {};
  const percent = typeof p.percent === "number" ? p.percent : 0;
  const loss = p.train?.metrics?.train_loss ?? null;
  const dice = p.eval?.metrics?.val_mean_dice ?? null;
  const facts =
    task.status === "RUNNING" && task.progress
      ? [
          `epoch ${p.current_epoch ?? "–"} / ${p.total_epochs ?? "–"}`,
          `iteration ${p.current_iteration ?? "–"} / ${p.total_iterations ?? "–"}`,
          `loss ${num(loss)}`,
          `validation Dice ${num(dice)}`,
          `time left ${duration(p.time_left_s)}`,
        ].join(" · ")
      : task.status === "SUBMITTED"
        ? "queued: waiting for a worker"
        : "starting";
  let curve = curves.get(task.id);
  if (!curve) {
    curve = { x: [], loss: [], dice: [] };
    curves.set(task.id, curve);
  }
  const step = typeof p.iteration === "number" ? p.iteration : undefined;
  if (step !== undefined && (loss !== null || dice !== null) && curve.x[curve.x.length - 1] !== step) {
    curve.x.push(step);
    curve.loss.push(loss);
    curve.dice.push(dice);
  }
  if (!card.firstChild) {
    card.append(
      h("h3", {}, `${task.kind} ${task.name} `, h("span", { class: "muted small" }, task.id)),
      h("div", { class: "facts" }),
      h("div", { class: "bar" }, h("div", { class: "fill" })),
      h("div", { class: "curves" }),
      admin
        ? h(
            "button",
            {
              type: "button",
              "data-action": "stop",
              onclick: () => act(async () => `Stopped ${(await ctx.api.stop(task.kind))?.id ?? "nothing"}`),
            },
            "Stop",
          )
        : "",
    );
  }
  const status = task.status === "SUBMITTED" ? "queued" : task.status.toLowerCase();
  (card.querySelector(".facts") as HTMLElement).replaceChildren(
    h("span", { class: `status ${task.status.toLowerCase()}`, "data-testid": "status" }, status),
    ` by ${task.created_by ?? "–"}, since ${task.start_ts} · `,
    h("span", { "data-testid": "facts" }, facts),
  );
  const bar = card.querySelector(".bar") as HTMLElement;
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuenow", String(percent));
  (bar.firstChild as HTMLElement).style.width = `${percent}%`;
  (bar.firstChild as HTMLElement).textContent = `${percent} %`;
  if (curve.x.length > 0) {
    const spec: ChartSpec = {
      x: curve.x,
      time: false,
      xLabel: "iteration",
      series: [
        { label: "loss", values: curve.loss, color: COLORS[1] },
        { label: "validation Dice", values: curve.dice, color: COLORS[2] },
      ],
    };
    if (curve.plot) updateChart(curve.plot, spec);
    else curve.plot = lineChart(card.querySelector(".curves") as HTMLElement, spec);
  }
}

/** The parameters a task was started with (the server adds the trainer's name as ``model``). */
function sameParams(task: Task): Record<string, unknown> {
  const params = { ...task.request };
  if (task.kind === "train") delete params.model;
  return params;
}

function outcome(task: Task): string {
  if (task.error) return task.error;
  const result = task.result as { train_stats?: { best_metric?: number } } | undefined;
  const best = result?.train_stats?.best_metric ?? task.progress?.best_metric;
  if (typeof best === "number") return `best metric ${num(best)}`;
  return task.details?.[task.details.length - 1] ?? "";
}
