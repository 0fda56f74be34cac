// The image and its drawing in NiiVue (WebGL2): three planes and a 3D rendering, window/level, the
// pen and eraser of its drawing layer, undo, and the drawing in and out in the file's voxel order.
import { type NiiVueLocation, Niivue, NVImage, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import { encodeRLE } from "@niivue/niivue/drawing";
import { type Grid, nativeToRAS, toNative, type Voxel } from "./geometry";

export type Tool = "navigate" | "clicks" | "paint" | "erase";
export type View = "multi" | "axial" | "coronal" | "sagittal" | "render";

/** Where the crosshair is: the file's voxel (i, j, k) and the image's value there. */
export interface Spot {
  voxel: Voxel;
  value: number;
}

const VIEWS: Record<View, SLICE_TYPE> = {
  multi: SLICE_TYPE.MULTIPLANAR,
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  render: SLICE_TYPE.RENDER,
};
/** NiiVue keeps this many drawing states; undo can go back one fewer. */
const UNDO_STATES = 16;

export class Viewer {
  /** The drawing changed: a stroke, an undo, a model's result or a loaded label. */
  onDrawing: () => void = () => {};
  /** The crosshair moved. */
  onSpot: (spot: Spot) => void = () => {};
  /** Window/level changed (by dragging with the right button, too). */
  onWindow: (width: number, level: number) => void = () => {};
  /** A click on a slice with the ``clicks`` tool: the file's voxel. */
  onClick: (voxel: Voxel) => void = () => {};

  private grid: Grid | null = null;
  private tool: Tool = "navigate";
  private label = 1;
  private undoDepth = 0;
  private clickArmed = false;
  /** The drawing before an eraser stroke: the stroke may take away only the chosen label. */
  private beforeErase: Uint8Array | null = null;

  private constructor(private readonly nv: Niivue) {}

  static async create(canvas: HTMLCanvasElement): Promise<Viewer> {
    const nv = new Niivue({
      backColor: [0, 0, 0, 1],
      show3Dcrosshair: true,
      // Thin and open in the middle, so that the voxel under it stays in sight.
      crosshairColor: [1, 0.25, 0.25, 0.6],
      crosshairWidth: 0.5,
      crosshairGap: 3,
      dragAndDropEnabled: false,
      isColorbar: false,
      multiplanarShowRender: SHOW_RENDER.ALWAYS,
      maxDrawUndoBitmaps: UNDO_STATES,
      logLevel: "error",
    });
    await nv.attachToCanvas(canvas);
    nv.setDrawOpacity(0.5);
    const viewer = new Viewer(nv);
    viewer.listen(canvas);
    return viewer;
  }

  private listen(canvas: HTMLCanvasElement): void {
    const nv = this.nv;
    // Capture: before NiiVue's own listener moves the crosshair or draws.
    canvas.addEventListener(
      "pointerdown",
      (event) => {
        this.clickArmed = this.tool === "clicks" && event.button === 0;
        this.beforeErase = this.tool === "erase" && nv.drawBitmap ? nv.drawBitmap.slice() : null;
      },
      { capture: true },
    );
    canvas.addEventListener("pointerup", () => {
      this.clickArmed = false;
    });
    nv.onLocationChange = (data: unknown) => {
      const location = data as NiiVueLocation;
      if (!this.grid) return;
      const voxel = toNative(this.grid, [location.vox[0], location.vox[1], location.vox[2]]);
      this.onSpot({ voxel, value: location.values[0]?.value ?? NaN });
      if (this.clickArmed && location.axCorSag <= SLICE_TYPE.SAGITTAL) {
        this.clickArmed = false;
        this.onClick(voxel);
      }
    };
    nv.onIntensityChange = (volume: NVImage) => this.reportWindow(volume);
    nv.onDrawingChanged = (action: string) => {
      if (action === "draw") {
        if (this.beforeErase) this.keepOtherLabels(this.beforeErase);
        this.beforeErase = null;
        this.undoDepth = Math.min(this.undoDepth + 1, UNDO_STATES - 1);
      }
      this.onDrawing();
    };
  }

  /** Show an image file (NIfTI or NRRD, as the server stores it) with an empty drawing. */
  async show(bytes: ArrayBuffer, name: string): Promise<void> {
    const nv = this.nv;
    const image = await NVImage.loadFromUrl({ url: bytes, name, colormap: "gray" });
    for (const volume of [...nv.volumes]) nv.removeVolume(volume);
    nv.closeDrawing();
    nv.addVolume(image);
    const hdr = image.hdr;
    if (!hdr || !image.dimsRAS || !image.img2RASstart || !image.img2RASstep) throw new Error("NiiVue read no header");
    this.grid = {
      dims: [hdr.dims[1], hdr.dims[2], hdr.dims[3]],
      dimsRAS: [image.dimsRAS[1], image.dimsRAS[2], image.dimsRAS[3]],
      start: [image.img2RASstart[0], image.img2RASstart[1], image.img2RASstart[2]],
      step: [image.img2RASstep[0], image.img2RASstep[1], image.img2RASstep[2]],
    };
    nv.createEmptyDrawing();
    this.undoDepth = 0;
    this.setTool(this.tool, this.label);
    this.reportWindow(image);
  }

  get loaded(): boolean {
    return this.grid !== null;
  }

  /** The image's dimensions (i, j, k) and one voxel's volume in mL, from its header. */
  get shape(): { dims: Voxel; voxelMl: number } {
    const hdr = this.image().hdr as NonNullable<NVImage["hdr"]>;
    const [, di, dj, dk] = hdr.dims;
    const [, si, sj, sk] = hdr.pixDims.map(Math.abs);
    return { dims: [di, dj, dk], voxelMl: (si * sj * sk) / 1000 };
  }

  /** The drawing, RAS order: NiiVue's own array, to read, not to keep. */
  get drawing(): Uint8Array {
    return this.nv.drawBitmap ?? new Uint8Array(0);
  }

  /** Replace the drawing (RAS order, from ``fromFile``) as one undoable step. */
  setDrawing(ras: Uint8Array): void {
    const nv = this.nv;
    nv.drawBitmap = ras;
    nv.drawAddUndoBitmap();
    nv.refreshDrawing(true);
    this.undoDepth = Math.min(this.undoDepth + 1, UNDO_STATES - 1);
    this.onDrawing();
  }

  /** Start the drawing over from ``ras`` (a label just loaded): nothing to undo. */
  resetDrawing(ras: Uint8Array): void {
    const nv = this.nv;
    nv.createEmptyDrawing();
    nv.drawBitmap = ras;
    nv.drawClearAllUndoBitmaps();
    nv.drawAddUndoBitmap();
    nv.refreshDrawing(true);
    this.undoDepth = 0;
    this.onDrawing();
  }

  get canUndo(): boolean {
    return this.undoDepth > 0;
  }

  undo(): void {
    if (!this.canUndo) return;
    this.undoDepth--;
    this.nv.drawUndo();
  }

  /** A label file on the image's grid (NIfTI or NRRD) as a RAS drawing. */
  async fromFile(bytes: ArrayBuffer, name: string): Promise<Uint8Array> {
    const label = await NVImage.loadFromUrl({ url: bytes, name });
    const hdr = label.hdr;
    const grid = this.grid;
    if (!hdr || !label.img || !grid) throw new Error("No image open, or the label has no header");
    const dims = [hdr.dims[1], hdr.dims[2], hdr.dims[3]];
    if (dims.some((d, a) => d !== grid.dims[a])) {
      throw new Error(`The label's grid ${dims.join("×")} is not the image's ${grid.dims.join("×")}`);
    }
    const slope = hdr.scl_slope || 1;
    const raw = label.img;
    const values = slope === 1 && !hdr.scl_inter ? raw : Array.from(raw, (v) => Math.round(v * slope + hdr.scl_inter));
    return nativeToRAS(grid, values);
  }

  /** The drawing as a gzipped NIfTI in the file's voxel order, with the image's header (NiiVue's export). */
  async toFile(): Promise<Blob> {
    const bytes = await this.nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    if (!(bytes instanceof Uint8Array)) throw new Error("NiiVue has no drawing to export");
    const gzip = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(gzip).blob();
  }

  setTool(tool: Tool, label: number): void {
    this.tool = tool;
    this.label = label;
    const nv = this.nv;
    const drawing = tool === "paint" || tool === "erase";
    nv.setDrawingEnabled(drawing);
    if (drawing) nv.setPenValue(tool === "paint" ? label : 0, nv.opts.isFilledPen);
  }

  setPen(size: number, filled: boolean): void {
    this.nv.opts.penSize = size;
    this.nv.opts.isFilledPen = filled;
  }

  setView(view: View): void {
    this.nv.setSliceType(VIEWS[view]);
  }

  setOpacity(opacity: number): void {
    this.nv.setDrawOpacity(opacity);
  }

  setWindow(width: number, level: number): void {
    const image = this.image();
    image.cal_min = level - width / 2;
    image.cal_max = level + width / 2;
    this.nv.updateGLVolume();
    this.onWindow(width, level);
  }

  /** The window NiiVue chose when it loaded the image (robust range). */
  autoWindow(): void {
    const image = this.image();
    const low = image.robust_min ?? 0;
    const high = image.robust_max ?? 1;
    this.setWindow(high - low, (high + low) / 2);
  }

  /** The RGB colour NiiVue draws ``value`` in. */
  color(value: number): string {
    const lut = this.nv.drawLut.lut;
    return `rgb(${lut[value * 4]}, ${lut[value * 4 + 1]}, ${lut[value * 4 + 2]})`;
  }

  private reportWindow(image: NVImage): void {
    const low = image.cal_min ?? 0;
    const high = image.cal_max ?? 1;
    this.onWindow(high - low, (high + low) / 2);
  }

  private image(): NVImage {
    const image = this.nv.volumes[0];
    if (!image) throw new Error("No image open");
    return image;
  }

  /** Undo what an eraser stroke took from labels other than the chosen one. */
  private keepOtherLabels(before: Uint8Array): void {
    const nv = this.nv;
    const now = nv.drawBitmap;
    if (!now || now.length !== before.length) return;
    const keep = this.label;
    let restored = 0;
    for (let i = 0; i < now.length; i++) {
      const was = before[i];
      if (was !== 0 && was !== keep && now[i] === 0) {
        now[i] = was;
        restored++;
      }
    }
    if (restored === 0) return;
    // The stroke's undo state was stored already: store the corrected drawing in its place.
    nv.drawUndoBitmaps[nv.currentDrawUndoBitmap] = encodeRLE(now);
    nv.refreshDrawing(true);
  }
}
