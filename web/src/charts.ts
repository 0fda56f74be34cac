// Line charts with uPlot (a small, well-kept chart library): no canvas drawing code of our own.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
}

export interface ChartSpec {
  x: number[];
  series: Series[];
  /** ``x`` is epoch seconds (a time axis); otherwise plain numbers, such as model versions. */
  time: boolean;
  xLabel?: string;
  yLabel?: string;
  /** Draw steps (a running total) instead of straight lines between points. */
  stepped?: boolean;
  height?: number;
}

export const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"];

/** A chart of ``spec`` in a new element of ``parent``; it follows the element's width. */
export function lineChart(parent: HTMLElement, spec: ChartSpec): uPlot {
  const box = document.createElement("div");
  box.className = "chart";
  parent.append(box);
  const width = () => Math.max(box.clientWidth || parent.clientWidth || 600, 200);
  const paths = spec.stepped ? uPlot.paths.stepped?.({ align: 1 }) : undefined;
  const opts: uPlot.Options = {
    width: width(),
    height: spec.height ?? 220,
    scales: { x: { time: spec.time } },
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    axes: [
      { label: spec.xLabel, ...(spec.time ? {} : { incrs: [1, 2, 5, 10, 20, 50, 100] }) },
      { label: spec.yLabel },
    ],
    series: [
      { label: spec.xLabel ?? (spec.time ? "time" : "x") },
      ...spec.series.map((s) => ({
        label: s.label,
        stroke: s.color,
        width: 2,
        spanGaps: true,
        points: { show: true, size: 6 },
        ...(paths ? { paths } : {}),
      })),
    ],
  };
  const plot = new uPlot(opts, data(spec), box);
  new ResizeObserver(() => {
    if (box.isConnected) plot.setSize({ width: width(), height: opts.height });
  }).observe(box);
  return plot;
}

/** New points for a chart made by ``lineChart`` with the same series. */
export function updateChart(plot: uPlot, spec: ChartSpec): void {
  plot.setData(data(spec));
}

function data(spec: ChartSpec): uPlot.AlignedData {
  return [spec.x, ...spec.series.map((s) => s.values)] as uPlot.AlignedData;
}
