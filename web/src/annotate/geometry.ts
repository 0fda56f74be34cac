// The two voxel orders of a volume: the file's own (i, j, k), the order of the server's arrays, of
// the clicks it takes and of the labels it stores; and NiiVue's RAS order, in which it draws.
//
// NiiVue reorders a volume to the nearest RAS axes without resampling (``permRAS``): RAS voxel
// (x, y, z) is the file's voxel at linear index start[0] + x·step[0] + start[1] + y·step[1] +
// start[2] + z·step[2] (``img2RASstart``, ``img2RASstep``; a negative step flips an axis). Its
// drawing is a uint8 array in that order, x fastest. These functions map between the two orders
// exactly as NiiVue's own ``img2RAS`` and drawing export do, so a click, a painted voxel and a
// saved label all land on the same (i, j, k).

/** How one volume's file order maps to NiiVue's RAS order. */
export interface Grid {
  /** The file's dimensions (i, j, k). */
  dims: [number, number, number];
  /** The RAS dimensions (x, y, z): ``dims`` permuted. */
  dimsRAS: [number, number, number];
  start: [number, number, number];
  step: [number, number, number];
}

export type Voxel = [number, number, number];

/** The file's linear index (i fastest) of RAS voxel (x, y, z). */
function nativeIndex(grid: Grid, [x, y, z]: Voxel): number {
  const { start, step } = grid;
  return start[0] + x * step[0] + start[1] + y * step[1] + start[2] + z * step[2];
}

/** RAS voxel (x, y, z) as the file's (i, j, k). */
export function toNative(grid: Grid, ras: Voxel): Voxel {
  const n = nativeIndex(grid, ras);
  const [di, dj] = grid.dims;
  return [n % di, Math.floor(n / di) % dj, Math.floor(n / (di * dj))];
}

/** Calls ``fn(rasIndex, nativeIndex)`` for every voxel, RAS order (x fastest). */
function eachVoxel(grid: Grid, fn: (ras: number, native: number) => void): void {
  const [nx, ny, nz] = grid.dimsRAS;
  const { start, step } = grid;
  let r = 0;
  for (let z = 0; z < nz; z++) {
    const zi = start[2] + z * step[2];
    for (let y = 0; y < ny; y++) {
      const yi = zi + start[1] + y * step[1];
      for (let x = 0; x < nx; x++) {
        fn(r++, yi + start[0] + x * step[0]);
      }
    }
  }
}

/** A volume in the file's order as a RAS-ordered uint8 drawing (values above 255 are cut). */
export function nativeToRAS(grid: Grid, native: ArrayLike<number>): Uint8Array {
  const ras = new Uint8Array(grid.dims[0] * grid.dims[1] * grid.dims[2]);
  eachVoxel(grid, (r, n) => {
    ras[r] = native[n];
  });
  return ras;
}

/** A RAS-ordered drawing in the file's order. */
export function rasToNative(grid: Grid, ras: Uint8Array): Uint8Array {
  const native = new Uint8Array(ras.length);
  eachVoxel(grid, (r, n) => {
    native[n] = ras[r];
  });
  return native;
}
