"""Numba kernels of the CPU rasterizer: tile intersection and alpha compositing (forward and backward).

The maths is gsplat 1.4.0's (``cuda/csrc/isect_tiles.cu``, ``rasterize_to_pixels_{fwd,bwd}.cu``), the loop order a
CPU's. Why numba rather than vectorised torch: compositing is a front-to-back scan per pixel with data-dependent exits
(``alpha < 1/255``, transmittance ``<= 1e-4``); vectorised, it materialises every (pixel, Gaussian) pair of a tile
(tens of millions per 256x256 view) and a cumprod over them: memory-bound, and 20-50x slower than a compiled scan
that touches each pair once and stops early.

Layout choices:

* ``prange`` runs one worker per numba thread; worker ``w`` takes tiles ``w, w + n_workers, ...``. Neighbouring tiles
  cost about the same, so round-robin balances an aerial view whose far half is denser than its near half, and the
  result is deterministic for a given thread count.
* A tile is scanned splat by splat (as gsplat's shared-memory batches do) rather than pixel by pixel, and a splat only
  visits the pixels of the tile inside its ``alpha >= 1/255`` ellipse, row spans solved from the quadratic with 1e-4 px
  of slack. The pixels left out are ones gsplat's ``alpha < 1/255`` test rejects, so this is a speed-up, not an
  approximation. Inside a span exp(-sigma) follows a multiplicative recurrence (``_row_start``) instead of one exp per
  pixel (relative error ~1e-14).
* Backward accumulates per-Gaussian gradients into per-worker buffers (summed afterwards) instead of atomics.
* Transmittance and per-pixel sums are float64 locals; inputs and outputs keep the caller's dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_MIN = 1.0 / 255.0  # gsplat skips fainter splats
ALPHA_MAX = 0.999  # gsplat's clamp, keeps 1 - alpha invertible in the backward pass
T_MIN = 1e-4  # a pixel stops once its next transmittance would reach this
PIX_EPS = 1e-4  # slack, in pixels, on the ellipse spans


@njit(inline="always")
def _tile_rect(mx, my, radius, tile_size, tile_width, tile_height):
    """Tiles [x0, x1) x [y0, y1) touched by a splat's radius square, in float32 like gsplat's isect_tiles kernel."""
    ts = np.float32(tile_size)
    r, tx, ty = np.float32(radius) / ts, np.float32(mx) / ts, np.float32(my) / ts
    x0, x1 = min(max(0, math.floor(tx - r)), tile_width), min(max(0, math.ceil(tx + r)), tile_width)
    y0, y1 = min(max(0, math.floor(ty - r)), tile_height), min(max(0, math.ceil(ty + r)), tile_height)
    return x0, x1, y0, y1


@njit(cache=True)
def isect_tiles_kernel(means2d, radii, depth_bits, depth_order, tile_size, tile_width, tile_height):
    """Per-tile, depth-sorted Gaussian lists in gsplat's encoding: tiles_per_gauss [C, N], isect_ids, flatten_ids and
    offsets [C, tile_height, tile_width].

    means2d [C, N, 2], radii [C, N] int32, depth_bits [C, N] int32 (float32 depths viewed as int32, as gsplat packs
    them into isect_ids), depth_order [C, N] a stable argsort of the depths per camera. A counting sort by tile fed in
    depth order gives exactly gsplat's radix-sorted (camera, tile, depth, index) order.
    """
    C, N = radii.shape
    n_tiles = tile_width * tile_height
    tile_n_bits = 0
    while (n_tiles >> tile_n_bits) > 0:  # int.bit_length()
        tile_n_bits += 1
    tiles_per_gauss = np.zeros((C, N), dtype=np.int32)
    counts = np.zeros(C * n_tiles + 1, dtype=np.int64)
    for c in range(C):
        for i in range(N):
            if radii[c, i] > 0:
                x0, x1, y0, y1 = _tile_rect(means2d[c, i, 0], means2d[c, i, 1], radii[c, i], tile_size, tile_width,
                                            tile_height)  # fmt: skip
                tiles_per_gauss[c, i] = (x1 - x0) * (y1 - y0)
                for ty in range(y0, y1):
                    counts[c * n_tiles + ty * tile_width + x0 + 1 : c * n_tiles + ty * tile_width + x1 + 1] += 1
    starts = np.cumsum(counts)  # starts[t] = first slot of tile t; starts[-1] = n_isects
    cursor = starts[:-1].copy()
    isect_ids = np.empty(starts[-1], dtype=np.int64)
    flatten_ids = np.empty(starts[-1], dtype=np.int32)
    for c in range(C):
        for i in depth_order[c]:
            if radii[c, i] <= 0:
                continue
            x0, x1, y0, y1 = _tile_rect(means2d[c, i, 0], means2d[c, i, 1], radii[c, i], tile_size, tile_width,
                                        tile_height)  # fmt: skip
            key = (np.int64(c) << (32 + tile_n_bits)) | (np.int64(depth_bits[c, i]) & 0xFFFFFFFF)
            for row in range(y0 * tile_width, y1 * tile_width, tile_width):
                for tile in range(row + x0, row + x1):
                    k = cursor[c * n_tiles + tile]
                    cursor[c * n_tiles + tile] = k + 1
                    isect_ids[k] = key | (np.int64(tile) << 32)
                    flatten_ids[k] = c * N + i
    return tiles_per_gauss, isect_ids, flatten_ids, starts[:-1].astype(np.int32).reshape(C, tile_height, tile_width)


@njit(inline="always")
def _splat_setup(mx, my, a, b, c, opac, y0, y1):
    """Per (splat, tile) set-up. Pixels can only pass gsplat's alpha >= 1/255 test inside the ellipse
    sigma = 0.5 d^T [[a, b], [b, c]] d <= s = log(255 opac) (taken 1e-6 wider, so rounding never drops a pixel).

    Returns (smooth, s, det, by0, by1, inv_a, qa, qb, qc): the rows [by0, by1) of [y0, y1) that meet the ellipse,
    whether the conic is positive definite with entries <= 10 (always so after gsplat's eps2d = 0.3 blur, which bounds
    them by 1 / eps2d), and for such a smooth splat 1 / a and the factors exp(-a), exp(-b), exp(-c) of the recurrence
    in ``_row_start``. Other splats test every pixel of the tile with an explicit exp and gsplat's sigma < 0 rule."""
    if not opac * 255.0 >= 1.0:
        return False, 0.0, 0.0, y0, y0, 0.0, 0.0, 0.0, 0.0
    s = math.log(255.0 * opac) + 1e-6
    det = a * c - b * b
    if a > 0.0 and det > 0.0 and a <= 10.0 and c <= 10.0 and abs(mx) < 1e9 and abs(my) < 1e9:
        ey = math.sqrt(2.0 * s * a / det)
        if ey < 1e7 and 2.0 * s * c / det < 1e14:
            by0 = max(y0, math.ceil(my - ey - 0.5 - PIX_EPS))
            by1 = max(by0, min(y1, math.floor(my + ey - 0.5 + PIX_EPS) + 1))
            return True, s, det, by0, by1, 1.0 / a, math.exp(-a), math.exp(-b), math.exp(-c)
    return False, s, det, y0, y1, 0.0, 0.0, 0.0, 0.0


@njit(inline="always")
def _row(smooth, fresh, lo_prev, vis, r, rd, mx, dy, a, b, c, s, det, inv_a, qa, qb, qc, x0, x1):
    """Columns [lo, hi) of [x0, x1) where the row (dy = mean_y - centre_y) meets the splat's ellipse, and for a smooth
    splat the recurrence state at lo (``_row_start``). Returns (lo, hi, fresh, lo_prev, vis, r, rd)."""
    if not smooth:
        return x0, x1, True, lo_prev, vis, r, rd
    disc = 2.0 * a * s - det * dy * dy
    if disc < 0.0:
        return x0, x0, True, lo_prev, vis, r, rd
    half, centre = math.sqrt(disc) * inv_a, mx + b * dy * inv_a - 0.5
    lo = max(x0, math.ceil(centre - half - PIX_EPS))
    hi = min(x1, math.floor(centre + half + PIX_EPS) + 1)
    if hi <= lo:
        return lo, lo, True, lo_prev, vis, r, rd
    vis, r, rd = _row_start(fresh, lo, lo_prev, mx, dy, a, b, c, qa, qb, qc, vis, r, rd)
    return lo, hi, False, lo, vis, r, rd


@njit(inline="always")
def _row_start(fresh, lo, lo_prev, mx, dy, a, b, c, qa, qb, qc, vis, r, rd):
    """vis = exp(-sigma) at the row's first pixel ``lo``, with the ratios r = vis(px + 1) / vis(px) and
    rd = vis(py + 1) / vis(py) there. sigma is quadratic, so the ratios are exponentials of linear functions: a step
    right multiplies r by exp(-a) and rd by exp(-b), a step down r by exp(-b) and rd by exp(-c). From the previous
    row's start (lo_prev) this walks one row down and |lo - lo_prev| columns across: a few products instead of
    exps. A fresh start (first row, after an empty row, or a long walk) evaluates the exps. Forward and backward run
    the same operations, so they see bit-identical alphas."""
    k = lo - lo_prev
    if fresh or k > 3 or k < -3:
        dx = mx - (lo + 0.5)
        vis = math.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        return vis, math.exp(a * dx + b * dy - 0.5 * a), math.exp(c * dy + b * dx - 0.5 * c)
    vis *= rd
    r *= qb
    rd *= qc
    while k > 0:
        vis *= r
        r *= qa
        rd *= qb
        k -= 1
    while k < 0:
        r /= qa
        vis /= r
        rd /= qb
        k += 1
    return vis, r, rd


@njit(inline="always")
def _tile(tile, offsets, n_isects, tile_size, width, height):
    """Camera, pixel bounds [x0, x1) x [y0, y1) and slice [start, end) of flatten_ids of a flat tile index."""
    C, tile_height, tile_width = offsets.shape
    cam = tile // (tile_height * tile_width)
    x0, y0 = (tile % tile_width) * tile_size, ((tile // tile_width) % tile_height) * tile_size
    start = offsets.flat[tile]
    end = offsets.flat[tile + 1] if tile + 1 < offsets.size else n_isects
    return cam, x0, y0, min(x0 + tile_size, width), min(y0 + tile_size, height), start, end


@njit(fastmath={"reassoc"}, cache=True)
def _dot(colors, g, v_rc, p):
    """<colors[g], v_rc[p]>. The one fast-math flag in this module: 'reassoc' lets LLVM vectorise this D-term sum
    (otherwise a chain of dependent adds that dominates the backward pass); no other IEEE rule is relaxed."""
    acc = 0.0
    for k in range(colors.shape[1]):
        acc += colors[g, k] * v_rc[p, k]
    return acc


@njit(parallel=True, cache=True, fastmath=False)
def rasterize_fwd_kernel(
    means2d, conics, colors, opacities, backgrounds, offsets, flatten_ids, width, height, tile_size, n_workers
):
    """Front-to-back compositing. means2d [CN, 2], conics [CN, 3], colors [CN, D], opacities [CN],
    backgrounds [C, D] (C = 0 rows: none), offsets [C, th, tw]. Returns render_colors [C, H, W, D],
    transmittance [C, H, W] (float64, after the last splat) and last_ids [C, H, W] (index into flatten_ids of the
    last splat that contributed, start - 1 when none)."""
    C, D, n_tiles, n_isects = offsets.shape[0], colors.shape[1], offsets.size, flatten_ids.shape[0]
    # every pixel belongs to a tile, which writes it
    render_colors = np.empty((C, height, width, D), dtype=colors.dtype)
    transmittance = np.empty((C, height, width), dtype=np.float64)
    last_ids = np.empty((C, height, width), dtype=np.int32)
    n_pix = tile_size * tile_size
    for w in prange(n_workers):
        T = np.empty(n_pix, dtype=np.float64)
        acc = np.empty((n_pix, D), dtype=np.float64)
        last = np.empty(n_pix, dtype=np.int32)
        done = np.empty(n_pix, dtype=np.bool_)
        for tile in range(w, n_tiles, n_workers):
            cam, x0, y0, x1, y1, start, end = _tile(tile, offsets, n_isects, tile_size, width, height)
            T[:] = 1.0
            acc[:] = 0.0
            last[:] = start - 1
            done[:] = False
            n_left = (x1 - x0) * (y1 - y0)
            for idx in range(start, end):
                if n_left == 0:
                    break
                g = flatten_ids[idx]
                mx, my = means2d[g, 0], means2d[g, 1]
                ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
                opac = opacities[g]
                smooth, s, det, by0, by1, inv_a, qa, qb, qc = _splat_setup(mx, my, ca, cb, cc, opac, y0, y1)
                fresh, lo_prev, vis0, r0, rd0 = True, 0, 0.0, 0.0, 0.0
                for py in range(by0, by1):
                    dy = my - (py + 0.5)
                    lo, hi, fresh, lo_prev, vis0, r0, rd0 = _row(
                        smooth, fresh, lo_prev, vis0, r0, rd0, mx, dy, ca, cb, cc, s, det, inv_a, qa, qb, qc, x0, x1
                    )
                    vis, r, row = vis0, r0, (py - y0) * tile_size - x0
                    for px in range(lo, hi):
                        if smooth:
                            vis_p = vis
                            vis *= r
                            r *= qa
                        else:
                            dx = mx - (px + 0.5)
                            sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                            if sigma < 0.0:
                                continue
                            vis_p = math.exp(-sigma)
                        p = row + px
                        if done[p]:
                            continue
                        alpha = min(ALPHA_MAX, opac * vis_p)
                        if alpha < ALPHA_MIN:
                            continue
                        next_T = T[p] * (1.0 - alpha)
                        if next_T <= T_MIN:
                            done[p] = True
                            n_left -= 1
                            continue
                        weight = alpha * T[p]
                        for k in range(D):
                            acc[p, k] += colors[g, k] * weight
                        T[p] = next_T
                        last[p] = idx
            for py in range(y0, y1):
                for px in range(x0, x1):
                    p = (py - y0) * tile_size + px - x0
                    transmittance[cam, py, px] = T[p]
                    last_ids[cam, py, px] = last[p]
                    for k in range(D):
                        bg = backgrounds[cam, k] * T[p] if backgrounds.shape[0] > 0 else 0.0
                        render_colors[cam, py, px, k] = acc[p, k] + bg
    return render_colors, transmittance, last_ids


@njit(parallel=True, cache=True, fastmath=False)
def rasterize_bwd_kernel(
    means2d,
    conics,
    colors,
    opacities,
    backgrounds,
    offsets,
    flatten_ids,
    fwd_out,
    v_out,
    geometry_channels,
    tile_size,
    n_workers,
):
    """gsplat's backward, given the forward's fwd_out = (transmittance, last_ids) and the output gradients
    v_out = (v_render_colors [C, H, W, D], v_render_alphas [C, H, W]): walk each pixel's splats back to front from
    its last contributor, recovering the transmittance before each splat by dividing the final one by (1 - alpha).
    Returns per-worker partial sums v_geom [W, CN, 8] (means2d x, y; absgrad x, y = sums of |per-pixel grad|;
    conics a, b, c; opacity) and v_colors [W, CN, D].

    gsplat keeps the colour composited behind the current splat per pixel (``buffer[D]``) only to form
    <buffer, dL/dcolor>; this keeps that dot product itself (``behind``), updated with the <color, dL/dcolor> that
    the splat's own alpha gradient needs anyway: the same sums, in another order, with one D-loop fewer.

    geometry_channels [D] (1 = on) selects the channels whose gradients reach the geometry (means2d, conics,
    opacities, through alpha); the others still get colour gradients but see the geometry as a constant, as if
    composited in a second pass over detached geometry."""
    transmittance, last_ids = fwd_out
    v_render_colors, v_render_alphas = v_out
    _, height, width = transmittance.shape
    CN, D = colors.shape
    n_tiles, n_isects = offsets.size, flatten_ids.shape[0]
    dtype = means2d.dtype
    v_geom = np.empty((n_workers, CN, 8), dtype=dtype)  # means2d (2), |means2d| (2), conics (3), opacity
    v_colors = np.empty((n_workers, CN, D), dtype=dtype)
    n_pix = tile_size * tile_size
    for w in prange(n_workers):
        T = np.empty(n_pix, dtype=np.float64)
        T_final = np.empty(n_pix, dtype=np.float64)
        v_alpha_out = np.empty(n_pix, dtype=np.float64)  # dL/d(render alpha) - <background, dL/d(render colour)>
        behind = np.empty(n_pix, dtype=np.float64)  # <colour composited behind the current splat, dL/dcolour>
        last = np.empty(n_pix, dtype=np.int32)
        v_rc = np.empty((n_pix, D), dtype=np.float64)
        v_rc_geom = np.empty((n_pix, D), dtype=np.float64)  # v_rc on the geometry channels, 0 elsewhere
        v_rgb = np.empty(D, dtype=np.float64)
        v_g = np.empty(8, dtype=np.float64)
        v_geom[w] = 0.0
        v_colors[w] = 0.0
        for tile in range(w, n_tiles, n_workers):
            cam, x0, y0, x1, y1, start, end = _tile(tile, offsets, n_isects, tile_size, width, height)
            if end <= start:
                continue
            last[:] = start - 1
            behind[:] = 0.0
            last_max = start - 1
            for py in range(y0, y1):
                for px in range(x0, x1):
                    p = (py - y0) * tile_size + px - x0
                    T[p] = transmittance[cam, py, px]
                    T_final[p] = T[p]
                    last[p] = last_ids[cam, py, px]
                    last_max = max(last_max, last[p])
                    bg_dot = 0.0
                    for k in range(D):
                        v_rc[p, k] = v_render_colors[cam, py, px, k]
                        v_rc_geom[p, k] = v_rc[p, k] * geometry_channels[k]
                        if backgrounds.shape[0] > 0:
                            bg_dot += backgrounds[cam, k] * v_rc_geom[p, k]
                    v_alpha_out[p] = v_render_alphas[cam, py, px] - bg_dot
            for idx in range(last_max, start - 1, -1):
                g = flatten_ids[idx]
                mx, my = means2d[g, 0], means2d[g, 1]
                ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
                opac = opacities[g]
                smooth, s, det, by0, by1, inv_a, qa, qb, qc = _splat_setup(mx, my, ca, cb, cc, opac, y0, y1)
                fresh, lo_prev, vis0, r0, rd0 = True, 0, 0.0, 0.0, 0.0
                v_rgb[:] = 0.0
                v_g[:] = 0.0
                hit = False
                for py in range(by0, by1):
                    dy = my - (py + 0.5)
                    lo, hi, fresh, lo_prev, vis0, r0, rd0 = _row(
                        smooth, fresh, lo_prev, vis0, r0, rd0, mx, dy, ca, cb, cc, s, det, inv_a, qa, qb, qc, x0, x1
                    )
                    vis, r, row = vis0, r0, (py - y0) * tile_size - x0
                    for px in range(lo, hi):
                        dx = mx - (px + 0.5)
                        if smooth:
                            vis_p = vis
                            vis *= r
                            r *= qa
                        else:
                            sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                            if sigma < 0.0:
                                continue
                            vis_p = math.exp(-sigma)
                        p = row + px
                        if idx > last[p]:
                            continue
                        alpha = min(ALPHA_MAX, opac * vis_p)
                        if alpha < ALPHA_MIN:
                            continue
                        hit = True
                        ra = 1.0 / (1.0 - alpha)
                        T[p] *= ra
                        fac = alpha * T[p]
                        for k in range(D):
                            v_rgb[k] += fac * v_rc[p, k]
                        cv = _dot(colors, g, v_rc_geom, p)
                        v_alpha = cv * T[p] - behind[p] * ra + T_final[p] * ra * v_alpha_out[p]
                        behind[p] += cv * fac
                        if opac * vis_p <= ALPHA_MAX:
                            v_sigma = -opac * vis_p * v_alpha
                            gx = v_sigma * (ca * dx + cb * dy)
                            gy = v_sigma * (cb * dx + cc * dy)
                            v_g[0] += gx
                            v_g[1] += gy
                            v_g[2] += abs(gx)
                            v_g[3] += abs(gy)
                            v_g[4] += 0.5 * v_sigma * dx * dx
                            v_g[5] += v_sigma * dx * dy
                            v_g[6] += 0.5 * v_sigma * dy * dy
                            v_g[7] += vis_p * v_alpha
                if hit:
                    for k in range(D):
                        v_colors[w, g, k] += v_rgb[k]
                    for k in range(8):
                        v_geom[w, g, k] += v_g[k]
    return v_geom, v_colors
