// The annotator's page: the panels on the left, NiiVue on the right with the label volumes beside
// it, and a status line with the crosshair's voxel. ``#/image/<id>`` opens that image.
import type { Api } from "../api";
import { h, section } from "../dom";
import { CasePanel } from "./case";
import type { Context } from "./context";
import { labelsOf, voxelCounts, volumeTable } from "./labels";
import { ModelPanel } from "./model";
import { SavePanel } from "./save";
import { ToolPanel, windowPanel } from "./tools";
import { Viewer } from "./viewer";

export async function annotator(main: HTMLElement, api: Api, clientId: () => string | undefined): Promise<void> {
  const info = await api.info();
  const canvas = h("canvas", { id: "gl", "aria-label": "Image viewer" });
  const spot = h("span", { "data-testid": "spot", class: "muted" }, "");
  const status = h("span", { class: "message", "data-testid": "status" });
  const volumes = h("div", { "data-testid": "volume-box" }, h("p", { class: "muted small" }, "No drawing yet"));
  const viewerBox = h("div", { class: "viewer" }, canvas);
  main.replaceChildren(h("p", { class: "muted" }, "Starting the viewer…"));
  main.append(viewerBox);
  let viewer: Viewer;
  try {
    viewer = await Viewer.create(canvas);
  } catch (error) {
    main.replaceChildren(h("p", { class: "error", role: "alert" }, `The viewer needs WebGL2, which this browser did not give: ${String(error)}`));
    return;
  }

  const ctx: Context = {
    api,
    info,
    labels: labelsOf(info.labels),
    viewer,
    clientId,
    current: null,
    label: () => tools.label,
    say: (text, error = false) => {
      status.replaceChildren(h("span", { class: error ? "error" : "ok", role: error ? "alert" : "status" }, text));
    },
  };
  const cases = new CasePanel(ctx);
  const image = windowPanel(ctx);
  const tools = new ToolPanel(ctx);
  const model = new ModelPanel(ctx);
  const save = new SavePanel(ctx);
  tools.colour();

  // Volumes are counted once per frame at most, however many strokes come in between.
  let counting = 0;
  const countVolumes = () => {
    if (counting) return;
    counting = requestAnimationFrame(() => {
      counting = 0;
      if (!viewer.loaded) return;
      const counts = voxelCounts(viewer.drawing);
      volumes.replaceChildren(volumeTable(ctx.labels, counts, viewer.shape.voxelMl, (v) => viewer.color(v)));
    });
  };
  viewer.onDrawing = () => {
    tools.drawingChanged();
    countVolumes();
  };
  viewer.onWindow = image.update;
  viewer.onClick = (voxel) => model.click(voxel);
  viewer.onSpot = ({ voxel, value }) => {
    spot.textContent = `voxel (${voxel.join(", ")}) = ${Number.isFinite(value) ? Number(value.toPrecision(6)) : "–"}`;
    spot.dataset.voxel = voxel.join(",");
    spot.dataset.value = String(value);
  };
  cases.onOpen = () => {
    model.reset();
    tools.drawingChanged();
    countVolumes();
    ctx.say("");
    main.dataset.ready = "";
  };
  save.onSaved = () => {
    cases.labelChanged();
    tools.drawingChanged();
    countVolumes();
  };
  model.onResult = countVolumes;

  main.replaceChildren(
    h(
      "div",
      { class: "annotator" },
      h("aside", { class: "panels" }, cases.element, image.element, model.element, tools.element, save.element),
      h("div", { class: "stage" }, viewerBox, h("div", { class: "statusline" }, spot, status)),
      h("aside", { class: "side" }, section("Volumes", volumes)),
    ),
  );
  const opened = /^#\/image\/(.+)$/.exec(location.hash);
  if (opened) {
    try {
      await cases.open(decodeURIComponent(opened[1]), null, null);
    } catch (error) {
      ctx.say(`Could not open image ${decodeURIComponent(opened[1])}: ${error instanceof Error ? error.message : String(error)}`, true);
      main.dataset.ready = "";
    }
  } else {
    ctx.say("Take the next case to start.");
    main.dataset.ready = "";
  }
}
