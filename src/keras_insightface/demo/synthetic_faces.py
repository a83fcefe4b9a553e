"""Procedural synthetic 112x112 RGB faces for a face-recognition training demo.

A fast, deterministic, numpy-only renderer. Each *identity* is a row of persistent traits
(face outline, skin / hair / iris colours, hairline, eye / eyebrow / nose / mouth / ear geometry,
beard, an identity-specific low-frequency skin texture and a set of moles / freckles at fixed
face coordinates). Each *image* adds its own nuisances: a similarity transform (translation,
in-plane rotation, scale) plus a small yaw-like shift of the inner features, expression (mouth
opening, smile, eye openness / blinks, gaze, eyebrow raise), background (colour gradient plus
smooth noise texture), clothing colour, lighting (brightness, contrast, a directional gradient,
a colour cast), partial occlusion (rectangle, sunglasses, face mask or hat), Gaussian blur and
sensor noise. All nuisance magnitudes are scaled by ``difficulty``.

Everything is drawn in face-local coordinates ``(u, v)`` (``u`` to the image right, ``v``
downwards, the face outline is an ellipse of half-size about ``0.75 x 1.0`` centred at the
origin), so the geometry moves with the pose. Layers are composited with anti-aliased soft masks,
vectorised over chunks of images; small features are only evaluated inside the union of their
bounding boxes over the chunk, and moles / freckles are splatted as small patches.

Example:
    >>> traits = sample_identities(10, seed=0)
    >>> images = render_faces(traits, [0, 0, 1, 2], seed=1)
    >>> images.shape, images.dtype
    ((4, 112, 112, 3), dtype('uint8'))

Run ``python -m keras_insightface.demo.synthetic_faces grid.png`` to write a 6 identities x
6 images preview grid (and print the rendering speed).
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 112
_HALF = IMAGE_SIZE / 2.0
_PPU = 46.0  # pixels per face-local unit at scale 1
_V0 = 0.05  # face-local v at the image centre
_CHUNK = 8  # images rendered together
_N_TEX = 2  # sinusoid components of the identity skin texture
_N_SPOTS = 12  # mole / freckle slots per identity
_SPOT_PATCH = 11  # side of the splatted mole patch (pixels)

_F32 = np.float32
_PIX = (np.arange(IMAGE_SIZE, dtype=_F32) + _F32(0.5 - _HALF)).astype(_F32)

_SKIN_LIGHT = np.array([0.93, 0.78, 0.67])
_SKIN_DARK = np.array([0.47, 0.32, 0.23])
_HAIR_PALETTE = np.array(
    [
        [0.07, 0.06, 0.05],  # black
        [0.22, 0.14, 0.09],  # dark brown
        [0.42, 0.28, 0.16],  # brown
        [0.80, 0.66, 0.40],  # blonde
        [0.58, 0.25, 0.10],  # red
        [0.58, 0.57, 0.55],  # grey
        [0.86, 0.85, 0.82],  # white
    ]
)
_HAIR_P = np.array([0.26, 0.22, 0.16, 0.14, 0.08, 0.09, 0.05])
_IRIS_PALETTE = np.array(
    [
        [0.22, 0.12, 0.06],  # dark brown
        [0.42, 0.25, 0.10],  # brown
        [0.45, 0.42, 0.18],  # hazel
        [0.25, 0.48, 0.28],  # green
        [0.25, 0.45, 0.78],  # blue
        [0.50, 0.56, 0.62],  # grey
    ]
)
_IRIS_P = np.array([0.3, 0.2, 0.12, 0.12, 0.16, 0.1])
_MASK_PALETTE = np.array([[0.85, 0.9, 0.95], [0.55, 0.75, 0.9], [0.1, 0.1, 0.12], [0.95, 0.95, 0.95]])


# --------------------------------------------------------------------------------------------
# identities
# --------------------------------------------------------------------------------------------
def sample_identities(n, seed):
    """Draws ``n`` identities; returns a dict of arrays with one row per identity.

    Args:
        n: number of identities.
        seed: seed of ``np.random.default_rng``; the result is a deterministic function of it.

    Returns:
        dict name -> float32 array of shape ``(n,)``, ``(n, 3)`` (colours) or ``(n, k, ...)``.
    """
    n = int(n)
    rng = np.random.default_rng(seed)

    def uni(lo, hi, *shape):
        return rng.uniform(lo, hi, (n,) + shape)

    t = {}
    t["face_w"] = uni(0.64, 0.86)
    t["face_h"] = uni(0.9, 1.06)
    t["jaw"] = uni(0.0, 0.42)  # narrowing of the lower face (0 = round, large = pointed chin)
    tone = uni(0.0, 0.85)
    t["skin"] = _SKIN_LIGHT + tone[:, None] * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 0.025, (n, 3))

    hair = _HAIR_PALETTE[rng.choice(len(_HAIR_PALETTE), n, p=_HAIR_P)]
    t["hair_color"] = np.clip(hair * uni(0.8, 1.2)[:, None] + rng.normal(0, 0.02, (n, 3)), 0.02, 0.95)
    bald = rng.random(n) < 0.08
    t["hairline"] = np.where(bald, -1.35, uni(-0.92, -0.42))  # v of the hairline at u = 0
    t["hair_curve"] = uni(-0.25, 0.9)  # > 0: hairline lower at the temples
    t["hair_part"] = uni(-0.45, 0.45)  # side parting: slope of the hairline
    t["hair_wave_amp"] = uni(0.0, 0.09) * (rng.random(n) < 0.6)
    t["hair_wave_freq"] = uni(4.0, 13.0)
    t["hair_wave_phase"] = uni(0.0, 2 * np.pi)
    t["hair_volume"] = np.where(bald, uni(-0.05, 0.04), uni(0.03, 0.24))
    long_hair = rng.random(n) < 0.35
    t["hair_length"] = np.where(long_hair, uni(0.6, 1.6), uni(-0.45, 0.15))  # hair (behind) stops at v

    t["eye_sep"] = uni(0.25, 0.38)
    t["eye_v"] = uni(-0.22, -0.02)
    t["eye_w"] = uni(0.095, 0.15)
    t["eye_h"] = t["eye_w"] * uni(0.36, 0.7)
    t["eye_tilt"] = uni(-0.3, 0.3)  # > 0: outer corners up
    t["iris_color"] = np.clip(
        _IRIS_PALETTE[rng.choice(len(_IRIS_PALETTE), n, p=_IRIS_P)] + rng.normal(0, 0.03, (n, 3)), 0, 1
    )
    t["brow_gap"] = uni(0.07, 0.16)  # above the top of the eye
    t["brow_thick"] = uni(0.016, 0.05)
    t["brow_len"] = uni(0.11, 0.19)
    t["brow_slope"] = uni(-0.4, 0.4)  # > 0: outer ends up
    t["brow_curve"] = uni(-0.05, 0.7)  # arch
    t["brow_shift"] = uni(-0.04, 0.04)  # brow centre outwards of the eye centre
    t["brow_dark"] = uni(0.45, 1.0)  # brow colour = hair colour * brow_dark

    t["nose_v"] = uni(0.18, 0.4)  # nose tip
    t["nose_w"] = uni(0.055, 0.115)
    t["mouth_v"] = np.minimum(t["nose_v"] + uni(0.16, 0.3), t["face_h"] * 0.72)
    t["mouth_w"] = uni(0.16, 0.3)
    t["lip_h"] = uni(0.03, 0.07)
    t["mouth_curve"] = uni(-0.02, 0.03)  # resting smile
    lip_tint = np.stack([uni(0.85, 1.0), uni(0.45, 0.62), uni(0.45, 0.62)], -1)
    t["lip_color"] = np.clip(t["skin"] * lip_tint + np.array([0.06, 0.0, 0.02]), 0, 1)
    t["ear_size"] = uni(0.12, 0.22)
    t["ear_v"] = t["eye_v"] + uni(0.04, 0.2)
    t["ear_out"] = uni(-0.02, 0.05)

    beard = rng.random(n) < 0.2
    t["beard"] = np.where(beard, uni(0.55, 0.95), 0.0)
    t["beard_top"] = t["nose_v"] + uni(0.04, 0.14)

    # low-frequency skin texture: a few plane waves in face coordinates
    ang = uni(0, 2 * np.pi, _N_TEX)
    freq = uni(3.0, 9.0, _N_TEX)
    t["tex_k"] = np.stack([np.cos(ang) * freq, np.sin(ang) * freq], -1)  # (n, K, 2)
    t["tex_phase"] = uni(0, 2 * np.pi, _N_TEX)
    t["tex_amp"] = uni(0.015, 0.07, _N_TEX)

    # moles (first slots, larger) and freckles at fixed face coordinates
    su = uni(-0.75, 0.75, _N_SPOTS) * t["face_w"][:, None]
    sv = uni(-0.75, 0.85, _N_SPOTS) * t["face_h"][:, None]
    inside = (su / t["face_w"][:, None]) ** 2 + (sv / t["face_h"][:, None]) ** 2 < 0.72
    density = uni(0.0, 1.0) ** 2
    present = rng.random((n, _N_SPOTS)) < density[:, None]
    present[:, :2] = rng.random((n, 2)) < 0.55  # moles
    t["spot_uv"] = np.stack([su, sv], -1)
    big = np.zeros((n, _N_SPOTS), bool)
    big[:, :2] = True
    t["spot_r"] = np.where(big, uni(0.03, 0.065, _N_SPOTS), uni(0.018, 0.032, _N_SPOTS))
    t["spot_alpha"] = np.where(big, uni(0.5, 0.85, _N_SPOTS), uni(0.25, 0.5, _N_SPOTS)) * (present & inside)
    return {k: np.ascontiguousarray(v, dtype=_F32) for k, v in t.items()}


# --------------------------------------------------------------------------------------------
# per-image nuisances
# --------------------------------------------------------------------------------------------
def _draw_nuisances(rng, n, d):
    def uni(lo, hi, *shape):
        return rng.uniform(lo, hi, (n,) + shape)

    p = {}
    p["tx"] = uni(-8, 8) * d
    p["ty"] = uni(-8, 8) * d
    p["rot"] = np.deg2rad(uni(-15, 15)) * d
    p["scale"] = 1.0 + uni(-0.1, 0.1) * d
    p["yaw"] = uni(-0.07, 0.07) * d  # shift of the inner features (pseudo out-of-plane turn)
    # expression
    open_ = np.where(rng.random(n) < 0.45, uni(0.0, 1.0) ** 1.5 * 0.11, 0.0)
    p["mouth_open"] = open_ * d
    p["smile"] = uni(-0.035, 0.075) * d
    blink = rng.random(n) < min(1.0, 0.08 * d)
    p["eye_open"] = np.where(blink, 0.1, np.clip(1.0 + uni(-0.35, 0.2) * d, 0.1, 1.5))
    p["gaze"] = uni(-0.35, 0.35, 2) * d  # in units of the iris radius
    p["brow_raise"] = uni(-0.02, 0.06) * d
    # background
    p["bg_c1"] = 0.5 + (uni(0.03, 0.97, 3) - 0.5) * d
    p["bg_c2"] = 0.5 + (uni(0.03, 0.97, 3) - 0.5) * d
    p["bg_dir"] = uni(0, 2 * np.pi)
    p["bg_noise"] = uni(0.0, 0.3) * d
    p["bg_coarse"] = rng.normal(0, 1, (n, 3, 4, 4))
    p["bg_fine"] = rng.normal(0, 1, (n, 3, 12, 12)) * uni(0.0, 0.7)[:, None, None, None]
    p["clothes"] = 0.4 + (uni(0.03, 0.97, 3) - 0.4) * d
    # lighting
    p["gain"] = np.exp(uni(-0.4, 0.35) * d)
    p["contrast"] = np.exp(uni(-0.45, 0.2) * d)
    p["light_amp"] = uni(0.0, 0.55) * d
    p["light_dir"] = uni(0, 2 * np.pi)
    p["cast"] = np.exp(rng.normal(0, 0.13, (n, 3)) * d)
    # degradations
    p["blur"] = uni(0.0, 1.5) * d
    p["noise"] = uni(0.0, 0.035) * d
    # occlusion: 0 rectangle, 1 sunglasses, 2 face mask, 3 hat
    p["occ"] = rng.random(n) < min(1.0, 0.3 * d)
    p["occ_type"] = rng.integers(0, 4, n)
    p["occ_box"] = np.stack([uni(-0.6, 0.6), uni(-0.5, 0.8), uni(0.2, 0.55), uni(0.15, 0.45)], -1)
    p["occ_level"] = uni(-0.1, 0.08)  # mask top / hat brim offset
    rand_col = uni(0.0, 1.0, 3)
    dark_col = uni(0.0, 0.25, 3)
    mask_col = np.clip(_MASK_PALETTE[rng.integers(0, len(_MASK_PALETTE), n)] + rng.normal(0, 0.05, (n, 3)), 0, 1)
    typ = p["occ_type"][:, None]
    p["occ_color"] = np.where(typ == 1, dark_col, np.where(typ == 2, mask_col, rand_col))
    return {k: (v if v.dtype == bool or v.dtype.kind == "i" else v.astype(_F32)) for k, v in p.items()}

# --------------------------------------------------------------------------------------------
# rendering helpers (all large arrays live in a preallocated workspace: fresh large temporaries
# would cost more in page faults than the arithmetic itself)
# --------------------------------------------------------------------------------------------
def _b(a):
    """(B,) -> (B, 1, 1)."""
    return np.asarray(a, _F32)[:, None, None]


def _bc(a):
    """(B, 3) -> (B, 3, 1, 1)."""
    return np.asarray(a, _F32)[:, :, None, None]


def _ell(out, tmp, du, dv, a, b):
    """out = (du / a)^2 + (dv / b)^2 (``tmp`` may alias ``dv``, ``out`` may alias ``du``)."""
    np.divide(du, a, out=out)
    np.square(out, out=out)
    np.divide(dv, b, out=tmp)
    np.square(tmp, out=tmp)
    out += tmp
    return out


def _fill(q, k):
    """In place: soft inside-mask of ``q < 1`` for a normalised quadratic; ``k`` ~ radius_px / 2."""
    np.subtract(1.0, q, out=q)
    q *= k
    q += 0.5
    np.clip(q, 0.0, 1.0, out=q)
    return q


def _band(x, k):
    """In place: soft mask of ``x > 0`` (``x`` in face units, ``k`` pixels per unit)."""
    x *= k
    x += 0.5
    np.clip(x, 0.0, 1.0, out=x)
    return x


def _interp_matrix(n_in, n_out):
    """Smooth (smoothstep) interpolation matrix (n_out, n_in) upsampling a coarse grid."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    fr = pos - lo
    fr = fr * fr * (3 - 2 * fr)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - fr
    m[np.arange(n_out), lo + 1] = fr
    return m


# background basis: coarse 4x4 noise, fine 12x12 noise, constant, linear ramp
_BG_BASIS = np.concatenate(
    [_interp_matrix(4, IMAGE_SIZE), _interp_matrix(12, IMAGE_SIZE), np.ones((IMAGE_SIZE, 1)), _PIX[:, None]], 1
).astype(_F32)
_BG_BASIS_T = np.ascontiguousarray(_BG_BASIS.T)
_DIST2 = np.square(_PIX[:, None] - _PIX[None, :]).astype(_F32)
_N_TMP = 9
_BLUR_BLOCK, _BLUR_HALO = 16, 8  # sigma <= 2: weights beyond 8 px are < 4e-4
_GREY = np.full((1, 3, 1, 1), 0.92, _F32)


def _view(flat, shape):
    """A C-contiguous array of ``shape`` on the start of the flat buffer ``flat``."""
    return flat[: int(np.prod(shape))].reshape(shape)


class _Work:
    """Preallocated buffers for chunks of up to ``b`` images (reused across chunks)."""

    def __init__(self, b):
        n1 = b * IMAGE_SIZE * IMAGE_SIZE
        self.coords = [np.empty((b, IMAGE_SIZE, IMAGE_SIZE), _F32) for _ in range(4)]  # u, v, uf, |uf|
        self.face_m, self.face_q = np.empty(n1, _F32), np.empty(n1, _F32)
        self.tmp = [np.empty(n1, _F32) for _ in range(_N_TMP)]  # flat: region views stay contiguous
        self.img = np.empty((b, 3, IMAGE_SIZE, IMAGE_SIZE), _F32)
        self.s3, self.s3b = np.empty(3 * n1, _F32), np.empty(3 * n1, _F32)


class _Chunk:
    """Face-local coordinate grids, canvas and scratch buffers of a chunk of images."""

    def __init__(self, tr, nu, work):
        self.tr, self.nu, self.w = tr, nu, work
        self.B = b = len(nu["tx"])
        self.ppu = ppu = (_PPU * nu["scale"]).astype(_F32)
        self.c = c = np.cos(nu["rot"]).astype(_F32)
        self.s = s = np.sin(nu["rot"]).astype(_F32)
        self.k = _b(ppu)
        x = _PIX[None, None, :] - _b(nu["tx"])  # (B, 1, W)
        y = _PIX[None, :, None] - _b(nu["ty"])  # (B, H, 1)
        self.u, self.v, self.uf, self.auf = (a[:b] for a in work.coords)
        np.multiply(x, _b(c / ppu), out=self.u)
        self.u += y * _b(s / ppu)
        np.multiply(x, _b(-s / ppu), out=self.v)
        self.v += y * _b(c / ppu) + _F32(_V0)
        np.subtract(self.u, _b(nu["yaw"]), out=self.uf)  # inner features (pseudo yaw)
        np.abs(self.uf, out=self.auf)
        self.img = work.img[:b]
        self._i = 0

    def roi(self, u0, u1, v0, v1):
        """Index covering the face-local boxes ``[u0,u1] x [v0,v1]`` of all images (or None)."""
        u0, u1, v0, v1 = (np.broadcast_to(np.asarray(a, _F32), (self.B,)) for a in (u0, u1, v0, v1))
        cu = np.stack([u0, u1, u0, u1], -1)
        cv = np.stack([v0, v0, v1, v1], -1) - _F32(_V0)
        p, c, s = self.ppu[:, None], self.c[:, None], self.s[:, None]
        xs = p * (c * cu - s * cv) + self.nu["tx"][:, None] + (_HALF - 0.5)
        ys = p * (s * cu + c * cv) + self.nu["ty"][:, None] + (_HALF - 0.5)
        c0, c1 = max(0, int(np.floor(xs.min())) - 2), min(IMAGE_SIZE, int(np.ceil(xs.max())) + 3)
        r0, r1 = max(0, int(np.floor(ys.min())) - 2), min(IMAGE_SIZE, int(np.ceil(ys.max())) + 3)
        self._i = 0  # a new layer starts: scratch buffers are free again
        if c0 >= c1 or r0 >= r1:
            return None
        return np.s_[:, r0:r1, c0:c1]

    def shape(self, sl, ch=None):
        hw = (sl[1].stop - sl[1].start, sl[2].stop - sl[2].start)
        return (self.B,) + ((ch,) if ch else ()) + hw

    def tmp(self, sl, n=1):
        """``n`` contiguous scratch arrays of shape (B, h, w) for the region ``sl``."""
        shape = self.shape(sl)
        out = [_view(self.w.tmp[self._i + j], shape) for j in range(n)]
        self._i += n
        return out

    def over(self, sl, m, col, f=None):
        """Composites colour ``col`` (B,3,1,1) [times per-pixel factor ``f``] with alpha ``m``."""
        _over(self.img[:, :, sl[1], sl[2]], _view(self.w.s3, self.shape(sl, 3)), m, col, f)

    def shade(self, sl, f):
        """Multiplies the region by the per-pixel factor ``f``."""
        self.img[:, :, sl[1], sl[2]] *= f[:, None]


def _over(canvas, s3, m, col, f=None):
    if f is None:
        np.subtract(col, canvas, out=s3)
    else:
        np.multiply(col, f[:, None], out=s3)
        s3 -= canvas
    s3 *= m[:, None]
    canvas += s3


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
def _background(ch):
    nu = ch.nu
    b = ch.B
    m = np.zeros((b, 3, _BG_BASIS.shape[1], _BG_BASIS.shape[1]), _F32)
    amp = (nu["bg_noise"] * 0.5)[:, None, None, None]
    m[:, :, :4, :4] = nu["bg_coarse"] * amp
    m[:, :, 4:16, 4:16] = nu["bg_fine"] * amp
    c1, diff = nu["bg_c1"], nu["bg_c2"] - nu["bg_c1"]
    m[:, :, 16, 16] = c1 + 0.5 * diff
    m[:, :, 16, 17] = diff * (np.cos(nu["bg_dir"]) / IMAGE_SIZE)[:, None]
    m[:, :, 17, 16] = diff * (np.sin(nu["bg_dir"]) / IMAGE_SIZE)[:, None]
    np.matmul(np.matmul(_BG_BASIS, m), _BG_BASIS_T, out=ch.img)


def _body(ch):
    tr, nu, k = ch.tr, ch.nu, ch.k
    fw, fh = tr["face_w"], tr["face_h"]
    # neck (its top is hidden by the face)
    sl = ch.roi(-fw * 0.55, fw * 0.55, fh * 0.45, 3.0)
    if sl is not None:
        u, v = ch.u[sl], ch.v[sl]
        m, t, f = ch.tmp(sl, 3)
        np.abs(u, out=m)
        np.subtract(_b(fw * 0.5), m, out=m)
        _band(m, k)
        np.subtract(v, _b(fh * 0.5), out=t)
        m *= _band(t, k)
        np.subtract(v, _b(fh), out=f)
        f *= 2.0
        np.clip(f, 0.0, 1.0, out=f)
        f *= -0.12
        f += 0.78
        ch.over(sl, m, _bc(tr["skin"]), f)
    # shoulders / clothes with a V neckline
    sl = ch.roi(-1.6, 1.6, fh + 0.1, 3.0)
    if sl is not None:
        q, t, f = ch.tmp(sl, 3)
        u = ch.u[sl]
        np.subtract(ch.v[sl], _b(fh + 0.85), out=t)
        _ell(q, t, u, t, 1.45, 0.72)
        np.minimum(q, 1.0, out=f)
        f *= -0.15
        f += 1.0
        _fill(q, k * 0.36)
        np.multiply(ch.v[sl], 0.45, out=t)
        t -= _b(0.45 * (fh + 0.45))
        t += np.abs(u)
        q *= _band(t, k)
        ch.over(sl, q, _bc(nu["clothes"]), f)


def _hair_shade(u, a, out):
    """Hair shading (lighter in the middle): 1.1 - 0.3 (u / a)^2, shared by back and front hair."""
    np.divide(u, a, out=out)
    np.square(out, out=out)
    np.minimum(out, 1.0, out=out)
    out *= -0.3
    out += 1.1
    return out


def _hair_geometry(tr):
    vol = tr["hair_volume"]
    return tr["face_w"] + vol + 0.03, tr["face_h"] + vol * 0.8, -0.12 - vol * 0.3


def _hair_back(ch):
    tr, k = ch.tr, ch.k
    a, b, vc = _hair_geometry(tr)
    sl = ch.roi(-a, a, vc - b, np.maximum(tr["hair_length"], vc) + 0.05)
    if sl is None:
        return
    u, v = ch.u[sl], ch.v[sl]
    q, t, f = ch.tmp(sl, 3)
    np.subtract(v, _b(vc), out=t)
    np.minimum(t, 0.0, out=t)  # below the centre the hair falls straight
    _ell(q, t, u, t, _b(a), _b(b))
    _fill(q, k * _b(a * 0.5))
    np.subtract(_b(tr["hair_length"]), v, out=t)
    q *= _band(t, k)
    ch.over(sl, q, _bc(tr["hair_color"]), _hair_shade(u, _b(a), f))


def _ears(ch):
    tr, k = ch.tr, ch.k
    es = tr["ear_size"]
    eu = tr["face_w"] * 0.97 + tr["ear_out"]
    ev = tr["ear_v"]
    skin = _bc(tr["skin"])
    a, b = _b(es * 0.45), _b(es)
    for side in (-1.0, 1.0):  # one region per side: the face covers the middle anyway
        sl = ch.roi(side * (eu - es * 0.5), side * (eu + es * 0.5), ev - es - 0.02, ev + es + 0.02)
        if sl is None:
            continue
        du, dv, q, t = ch.tmp(sl, 4)
        np.multiply(ch.u[sl], side, out=du)
        du -= _b(eu)
        np.subtract(ch.v[sl], _b(ev), out=dv)
        _ell(q, t, du, dv, a, b)
        ch.over(sl, _fill(q, k * _b(es * 0.22)), skin * 0.9)
        du -= a * 0.15  # inner ear: darker
        dv -= b * 0.05
        _ell(q, t, du, dv, a * 0.55, b * 0.62)
        _fill(q, k * _b(es * 0.15))
        q *= -0.19
        q += 1.0
        ch.shade(sl, q)


def _texture(ch):
    """1 + the identity's low-frequency skin texture, full frame, (B, H, W).

    Each plane wave ``sin(kx*u + ky*v + phase)`` is ``sin(A*x + By*y + C)`` in pixel coordinates,
    i.e. a rank-2 outer product, so the whole texture is one small batched matmul.
    """
    tr, nu = ch.tr, ch.nu
    kx, ky = tr["tex_k"][..., 0], tr["tex_k"][..., 1]  # (B, K)
    c, s, p = ch.c[:, None], ch.s[:, None], ch.ppu[:, None]
    ax = (kx * c - ky * s) / p
    by = (kx * s + ky * c) / p
    cc = tr["tex_phase"] + ky * _F32(_V0) - ax * nu["tx"][:, None] - by * nu["ty"][:, None]
    ya = by[:, None, :] * _PIX[None, :, None]  # (B, H, K)
    xa = ax[:, :, None] * _PIX[None, None, :] + cc[:, :, None]  # (B, K, W)
    amp = tr["tex_amp"][:, None, :]
    left = np.concatenate([np.cos(ya) * amp, np.sin(ya) * amp], -1)  # (B, H, 2K)
    right = np.concatenate([np.sin(xa), np.cos(xa)], 1)  # (B, 2K, W)
    out = _view(ch.w.tmp[-1], (ch.B, IMAGE_SIZE, IMAGE_SIZE))
    np.matmul(left.astype(_F32), right.astype(_F32), out=out)
    out += 1.0
    return out


def _face(ch):
    """Face skin with identity texture and edge shading, moles / freckles and beard."""
    tr, k = ch.tr, ch.k
    fw, fh = tr["face_w"], tr["face_h"]
    sl = ch.face_sl = ch.roi(-fw, fw, -fh, fh)
    if sl is None:
        return
    u, v = ch.u[sl], ch.v[sl]
    m, q = _view(ch.w.face_m, ch.shape(sl)), _view(ch.w.face_q, ch.shape(sl))
    vn, wv, f = ch.tmp(sl, 3)
    np.divide(v, _b(fh), out=vn)
    np.clip(vn, 0.0, 1.0, out=wv)
    np.square(wv, out=wv)
    wv *= _b(-tr["jaw"])
    wv += 1.0
    wv *= _b(fw)  # half width narrows towards the chin
    np.divide(u, wv, out=q)
    np.square(q, out=q)
    np.square(vn, out=vn)
    q += vn
    np.subtract(1.0, q, out=m)
    m *= k * _b(fw * 0.5)
    m += 0.5
    np.clip(m, 0.0, 1.0, out=m)
    np.square(q, out=f)
    f *= -0.2
    f += 1.06
    f *= _texture(ch)[sl]
    ch.over(sl, m, _bc(tr["skin"]), f)
    ch.face_m, ch.face_q = m, q
    _spots(ch)
    has = tr["beard"] > 0
    if np.any(has):  # beard and moustache, in the lower part of the face region
        bsl = ch.roi(-fw, fw, np.where(has, tr["beard_top"] - 0.05, fh), fh)
        if bsl is None:
            return
        r0 = max(bsl[1].start, sl[1].start)
        if r0 >= sl[1].stop:
            return
        bsl = np.s_[:, r0 : sl[1].stop, sl[2]]
        bm = m[:, r0 - sl[1].start :]
        (t,) = ch.tmp(bsl, 1)
        np.abs(ch.u[bsl], out=t)
        t *= 0.02
        t += ch.v[bsl]
        t -= _b(tr["beard_top"])
        _band(t, k * 0.3)
        t *= bm
        t *= _b(tr["beard"])
        ch.over(bsl, t, _bc(tr["hair_color"] * 0.85))


def _spots(ch):
    """Moles and freckles splatted as small patches at their (transformed) positions."""
    tr, nu = ch.tr, ch.nu
    alpha = tr["spot_alpha"]  # (B, S)
    bi, si = np.nonzero(alpha > 0)
    if bi.size == 0:
        return
    uv = tr["spot_uv"][bi, si]  # (P, 2)
    uu, vv = uv[:, 0] + nu["yaw"][bi] * 0.5, uv[:, 1] - _F32(_V0)
    p, c, s = ch.ppu[bi], ch.c[bi], ch.s[bi]
    px = p * (c * uu - s * vv) + nu["tx"][bi] + (_HALF - 0.5)  # pixel index coordinates
    py = p * (s * uu + c * vv) + nu["ty"][bi] + (_HALF - 0.5)
    r = tr["spot_r"][bi, si] * p  # radius in pixels
    off = np.arange(-(_SPOT_PATCH // 2), _SPOT_PATCH // 2 + 1)
    cols = np.clip(np.round(px).astype(int)[:, None] + off, 0, IMAGE_SIZE - 1)  # (P, K)
    rows = np.clip(np.round(py).astype(int)[:, None] + off, 0, IMAGE_SIZE - 1)
    dx, dy = cols - px[:, None], rows - py[:, None]
    dist = np.sqrt(dx[:, None, :] ** 2 + dy[:, :, None] ** 2)  # (P, K, K)
    m = np.clip(r[:, None, None] - dist + 0.5, 0.0, 1.0) * alpha[bi, si][:, None, None]
    idx = (bi[:, None, None, None], np.arange(3)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :])
    patch = ch.img[idx]  # (P, 3, K, K)
    col = (tr["skin"][bi] * np.array([0.45, 0.33, 0.28], _F32))[:, :, None, None]
    patch += (col - patch) * m[:, None]
    ch.img[idx] = patch


def _nose(ch):
    """Bridge shading, the shadow under the tip, a tip highlight and nostrils (multiplicative)."""
    tr, nu, k = ch.tr, ch.nu, ch.k
    nw, nv, ev = tr["nose_w"], tr["nose_v"], tr["eye_v"]
    sl = ch.roi(-nw * 1.6 - 0.1, nw * 1.6 + 0.1, ev, nv + nw)
    if sl is None:
        return
    u, au, t, line, w = ch.tmp(sl, 5)
    np.subtract(ch.u[sl], _b(nu["yaw"] * 1.5), out=u)  # the nose protrudes: moves more with yaw
    v = ch.v[sl]
    nw_, nv_ = _b(nw), _b(nv)
    np.abs(u, out=au)
    # bridge: two faint shading lines converging towards the eyes
    np.subtract(v, _b(ev + 0.06), out=t)
    t /= _b(nv - ev - 0.06)
    np.clip(t, 0.0, 1.0, out=t)
    np.multiply(t, nw_ * 0.5, out=line)
    line += nw_ * 0.35
    np.subtract(au, line, out=line)
    line *= 1.0 / 0.025
    np.square(line, out=line)
    np.subtract(1.0, line, out=line)
    np.clip(line, 0.0, 1.0, out=line)
    np.subtract(1.3, t, out=w)
    w *= t
    w *= -0.135
    w *= line
    w += 1.0  # w: multiplicative shading of the nose region
    for dv0, sa, sb, kk, gain in ((0.015, 1.15, 0.6, 0.4, -0.17), (-0.02, 0.75, 0.55, 0.3, 0.05)):
        np.subtract(v, nv_ + dv0, out=t)
        _ell(line, t, u, t, nw_ * sa, nw_ * sb)
        _fill(line, k * nw_ * kk)
        line *= gain
        line += 1.0
        w *= line
    au -= nw_ * 0.55
    np.subtract(v, nv_ + 0.03, out=t)
    _ell(line, t, au, t, nw_ * 0.36, 0.022)
    _fill(line, k * 0.011)
    line *= -0.65
    line += 1.0
    w *= line
    ch.shade(sl, w)


def _mouth(ch):
    tr, nu, k = ch.tr, ch.nu, ch.k
    mw, mv, lh = tr["mouth_w"], tr["mouth_v"], tr["lip_h"]
    op = nu["mouth_open"]
    smile = nu["smile"] + tr["mouth_curve"]
    sl = ch.roi(-mw - 0.04, mw + 0.04, mv - lh - 0.12, mv + lh + op + 0.08)
    if sl is None:
        return
    t2, dv, q, t = ch.tmp(sl, 4)
    np.divide(ch.uf[sl], _b(mw), out=t2)
    np.square(t2, out=t2)
    np.subtract(ch.v[sl], _b(mv + op * 0.5), out=dv)
    np.multiply(t2, _b(smile), out=t)
    dv += t  # the corners move up for a smile
    oh = _b(op * 0.5)
    np.divide(dv, _b(lh) + oh, out=q)
    np.square(q, out=q)
    q += t2
    _fill(q, k * _b(lh * 0.5))
    ch.over(sl, q, _bc(tr["lip_color"]))
    # lip line (closed) or dark opening (open) with the upper teeth
    np.divide(dv, oh + 0.007, out=q)
    np.square(q, out=q)
    np.multiply(t2, 1.0 / 0.92, out=t)
    q += t
    _fill(q, k * (oh + 0.007) * 0.5)
    ch.over(sl, q, _bc(tr["lip_color"] * 0.3))
    teeth = np.clip(op * 30.0 - 0.5, 0.0, 1.0)
    if np.any(teeth > 0):
        np.add(dv, oh * 0.25, out=t)
        np.negative(t, out=t)
        _band(t, k)
        t *= q
        t *= _b(teeth)
        ch.over(sl, t, _GREY)


def _eyes(ch):
    tr, nu, k = ch.tr, ch.nu, ch.k
    sep, ev, ew, eh0 = tr["eye_sep"], tr["eye_v"], tr["eye_w"], tr["eye_h"]
    eh = eh0 * nu["eye_open"]
    ew_, eh_ = _b(ew), _b(eh)
    ri = _b(np.minimum(eh0, ew * 0.62))
    gy = _b(nu["gaze"][:, 1] * 0.4) * ri
    lash = _bc(tr["hair_color"] * 0.25 + tr["skin"] * 0.1)
    for side in (-1.0, 1.0):
        top, bottom = ev - np.maximum(eh, eh0) - 0.05, ev + eh0 + 0.05
        sl = ch.roi(side * (sep - ew - 0.04), side * (sep + ew + 0.04), top, bottom)
        if sl is None:
            continue
        du, dv, dvt, white, q, t = ch.tmp(sl, 6)
        np.multiply(ch.uf[sl], side, out=du)
        du -= _b(sep)  # > 0 towards the outer corner
        np.subtract(ch.v[sl], _b(ev), out=dv)
        np.multiply(du, _b(tr["eye_tilt"]), out=dvt)
        dvt += dv
        # lash line / lids: a slightly larger dark ellipse, raised
        np.add(dvt, 0.012, out=t)
        _ell(q, t, du, t, ew_ * 1.1, eh_ + 0.022)
        _fill(q, k * (eh_ + 0.02) * 0.5)
        q *= 0.85
        ch.over(sl, q, lash)
        # sclera
        _ell(white, t, du, dvt, ew_, eh_)
        _fill(white, k * eh_ * 0.5)
        ch.over(sl, white, _GREY)
        # iris and pupil, clipped by the lids
        du -= _b(nu["gaze"][:, 0] * side) * ri
        dv -= gy
        _ell(q, t, du, dv, ri, ri)
        np.multiply(q, 2.6**2, out=dvt)
        _fill(q, k * ri * 0.5)
        q *= white
        ch.over(sl, q, _bc(tr["iris_color"]))
        _fill(dvt, k * ri * 0.2)
        dvt *= white
        dvt *= -0.95
        dvt += 1.0
        ch.shade(sl, dvt)
        # specular highlight (towards the upper left in both eyes)
        du += ri * 0.3 * side
        dv += ri * 0.3
        _ell(q, t, du, dv, ri * 0.25, ri * 0.25)
        _fill(q, k * ri * 0.12)
        q *= white
        q *= 0.8
        ch.over(sl, q, _GREY)


def _brows(ch):
    tr, nu, k = ch.tr, ch.nu, ch.k
    ev, bl, th = tr["eye_v"], tr["brow_len"], tr["brow_thick"]
    bv = ev - tr["eye_h"] - tr["brow_gap"] - nu["brow_raise"]
    bu = tr["eye_sep"] + tr["brow_shift"]
    col = _bc(tr["hair_color"] * tr["brow_dark"][:, None] * 0.9)
    for side in (-1.0, 1.0):
        top, bottom = bv - bl * 0.7 - th - 0.05, bv + bl * 0.5 + th + 0.05
        sl = ch.roi(side * (bu - bl - 0.03), side * (bu + bl + 0.03), top, bottom)
        if sl is None:
            continue
        du, t, dv, w = ch.tmp(sl, 4)
        np.multiply(ch.uf[sl], side, out=du)
        du -= _b(bu)
        np.divide(du, _b(bl), out=t)
        np.subtract(ch.v[sl], _b(bv), out=dv)
        np.multiply(du, _b(tr["brow_slope"]), out=w)
        dv += w
        np.square(t, out=w)
        w -= 0.3
        w *= _b(tr["brow_curve"] * bl)
        dv -= w  # arch
        np.clip(t, -1.0, 1.0, out=w)
        w *= -0.35
        w += 1.15
        w *= _b(th)  # thicker at the inner end
        np.divide(dv, w, out=dv)
        np.square(dv, out=dv)
        np.square(t, out=w)
        dv += w
        _fill(dv, k * _b(th * 0.6))
        dv *= 0.95
        ch.over(sl, dv, col)


def _hair_front(ch):
    """Hair over the forehead, above an identity-specific hairline."""
    tr, k = ch.tr, ch.k
    if np.all(tr["hairline"] < -1.2) or ch.face_sl is None:
        return
    fw, fh = tr["face_w"], tr["face_h"]
    low = tr["hairline"] + np.abs(tr["hair_part"]) * fw + np.maximum(tr["hair_curve"], 0) * fw**2 + 0.1
    sl = ch.roi(-fw, fw, -fh - 0.05, np.minimum(low, fh))
    if sl is None:
        return
    fs = ch.face_sl  # the face mask is only known there
    r0, r1 = max(sl[1].start, fs[1].start), min(sl[1].stop, fs[1].stop)
    if r1 <= r0:
        return
    sl = np.s_[:, r0:r1, fs[2]]
    fq = ch.face_q[:, r0 - fs[1].start : r1 - fs[1].start]
    u, v = ch.u[sl], ch.v[sl]
    wave, hl, t = ch.tmp(sl, 3)
    np.multiply(u, _b(tr["hair_wave_freq"]), out=wave)
    wave += _b(tr["hair_wave_phase"])
    np.sin(wave, out=wave)
    wave *= _b(tr["hair_wave_amp"])
    np.square(u, out=hl)
    hl *= _b(tr["hair_curve"])
    np.multiply(u, _b(tr["hair_part"]), out=t)
    hl += t
    hl += wave
    hl += _b(tr["hairline"])
    hl -= v
    _band(hl, k)
    # a slightly enlarged face mask, so that no skin-coloured rim remains around the hair
    np.subtract(1.1, fq, out=t)
    t *= k * _b(fw * 0.5)
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    hl *= t
    ch.over(sl, hl, _bc(tr["hair_color"]), _hair_shade(u, _b(_hair_geometry(tr)[0]), t))


def _occlusion(ch):
    """Rectangles, sunglasses, face masks and hats over a random subset of the images."""
    nu, tr, w = ch.nu, ch.tr, ch.w
    sel = np.nonzero(nu["occ"])[0]
    if sel.size == 0:
        return
    typ = nu["occ_type"][sel]
    for ty in np.unique(typ):
        idx = sel[typ == ty]
        n = idx.size
        g = {key: _b(tr[key][idx]) for key in ("face_w", "face_h", "eye_sep", "eye_v", "eye_w", "nose_v", "hairline")}
        k = _b(ch.ppu[idx])
        lvl = _b(nu["occ_level"][idx])
        U, V, m, t, t2, q = (_view(a, (n, IMAGE_SIZE, IMAGE_SIZE)) for a in w.tmp[:6])
        np.take(ch.u, idx, axis=0, out=U)
        np.take(ch.v, idx, axis=0, out=V)
        if ty == 0:  # rectangle in face coordinates
            box = nu["occ_box"][idx]
            np.subtract(U, _b(box[:, 0]), out=m)
            np.abs(m, out=m)
            np.subtract(_b(box[:, 2]), m, out=m)
            _band(m, k)
            np.subtract(V, _b(box[:, 1]), out=t)
            np.abs(t, out=t)
            np.subtract(_b(box[:, 3]), t, out=t)
            m *= _band(t, k)
        elif ty == 1:  # sunglasses: two lenses and a bar along their top
            auf = q
            np.take(ch.auf, idx, axis=0, out=auf)
            sep, ew = g["eye_sep"], g["eye_w"]
            dv = t2
            np.subtract(V, g["eye_v"] + 0.01, out=dv)
            np.subtract(auf, sep, out=t)
            _ell(m, U, t, dv, ew * 1.7, ew * 1.35)
            np.add(dv, ew * 0.6, out=t)
            np.abs(t, out=t)
            np.subtract(0.02, t, out=t)
            _band(t, k)
            np.subtract(g["face_w"] + 0.08, auf, out=dv)
            t *= _band(dv, k)
            _fill(m, k * ew * 0.6)
            np.maximum(m, t, out=m)
        elif ty == 2:  # face mask over nose and mouth
            _ell(m, t, U, V, g["face_w"] * 1.04, g["face_h"] * 1.06)
            _fill(m, k * 0.35)
            np.square(U, out=t)
            t *= -0.08
            t += V
            t -= g["nose_v"] - 0.1 + lvl
            m *= _band(t, k)
        else:  # hat
            np.add(V, 0.1, out=t)
            _ell(m, t, U, t, g["face_w"] + 0.28, g["face_h"] + 0.3)
            _fill(m, k * 0.45)
            np.multiply(U, 0.1, out=t)
            t -= V
            t += np.clip(g["hairline"], -1.0, -0.5) + 0.05 + lvl
            m *= _band(t, k)
        np.clip(V, -1.0, 1.0, out=t)
        t *= -0.1
        t += 1.05
        sub = _view(w.s3b, (n, 3, IMAGE_SIZE, IMAGE_SIZE))
        np.take(ch.img, idx, axis=0, out=sub)
        _over(sub, _view(w.s3, sub.shape), m, _bc(nu["occ_color"][idx]), t)
        ch.img[idx] = sub


def _finish(ch, rng):
    """Lighting, colour cast, blur and sensor noise; returns the canvas scaled to [0.5, 255.5]."""
    nu, img = ch.nu, ch.img
    s3 = _view(ch.w.s3, img.shape)
    g = nu["gain"][:, None] * nu["cast"]
    img *= _bc(nu["contrast"][:, None] * g)
    img += _bc(0.5 * (1.0 - nu["contrast"][:, None]) * g)
    light, ker = (_view(a, (ch.B, IMAGE_SIZE, IMAGE_SIZE)) for a in ch.w.tmp[:2])
    la = nu["light_amp"] / _HALF
    np.multiply(_PIX[None, None, :], _b(la * np.cos(nu["light_dir"])), out=light)
    light += _PIX[None, :, None] * _b(la * np.sin(nu["light_dir"])) + 1.0
    img *= light[:, None]
    # separable Gaussian blur: batched matmuls with symmetric per-image kernels
    sig = np.clip(nu["blur"], 0.05, 2.0)
    np.multiply(_DIST2, _b(-0.5 / sig**2), out=ker)
    np.exp(ker, out=ker)
    norm = 1.0 / np.sqrt(ker.sum(-1))
    ker *= norm[:, :, None]
    ker *= norm[:, None, :]
    for a0 in range(0, IMAGE_SIZE, _BLUR_BLOCK):  # the kernels are banded: block-wise
        a1, b0, b1 = a0 + _BLUR_BLOCK, max(0, a0 - _BLUR_HALO), min(IMAGE_SIZE, a0 + _BLUR_BLOCK + _BLUR_HALO)
        np.matmul(ker[:, None, a0:a1, b0:b1], img[:, :, b0:b1], out=s3[:, :, a0:a1])
    for a0 in range(0, IMAGE_SIZE, _BLUR_BLOCK):
        a1, b0, b1 = a0 + _BLUR_BLOCK, max(0, a0 - _BLUR_HALO), min(IMAGE_SIZE, a0 + _BLUR_BLOCK + _BLUR_HALO)
        np.matmul(s3[..., b0:b1], ker[:, None, b0:b1, a0:a1], out=img[..., a0:a1])
    # sensor noise (uniform, with the variance of the Gaussian it stands for)
    rng.random(dtype=_F32, out=s3)
    s3 -= 0.5
    s3 *= _bc(nu["noise"][:, None] * np.sqrt(12.0))
    img += s3
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    return img


def _render_chunk(ch, rng):
    _background(ch)
    _body(ch)
    _hair_back(ch)
    _ears(ch)
    _face(ch)
    _nose(ch)
    _mouth(ch)
    _eyes(ch)
    _brows(ch)
    _hair_front(ch)
    _occlusion(ch)
    return _finish(ch, rng)


def render_faces(traits, identity_ids, seed, *, difficulty=1.0):
    """Renders one 112x112 RGB face per entry of ``identity_ids``.

    Args:
        traits: dict from :func:`sample_identities`.
        identity_ids: 1-D sequence of row indices into ``traits``.
        seed: seed of the per-image nuisances; the output is a deterministic function of
            ``(traits, identity_ids, seed, difficulty)``.
        difficulty: scales every nuisance magnitude (0 = canonical frontal image on a grey
            background, 1 = default, larger = harder).

    Returns:
        uint8 array ``(len(identity_ids), 112, 112, 3)``.
    """
    ids = np.asarray(identity_ids, dtype=np.int64).reshape(-1)
    n = ids.size
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    nus = _draw_nuisances(rng, n, max(0.0, float(difficulty)))
    work = _Work(min(n, _CHUNK))
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        tr = {k: v[ids[s:e]] for k, v in traits.items()}
        nu = {k: v[s:e] for k, v in nus.items()}
        out[s:e] = _render_chunk(_Chunk(tr, nu, work), rng).transpose(0, 2, 3, 1)
    return out


if __name__ == "__main__":
    import sys
    import time

    import matplotlib.pyplot as plt

    path = sys.argv[1] if len(sys.argv) > 1 else "faces_grid.png"
    n_id, n_img = 6, 6
    traits = sample_identities(n_id, seed=0)
    imgs = render_faces(traits, np.repeat(np.arange(n_id), n_img), seed=1)
    grid = imgs.reshape(n_id, n_img, IMAGE_SIZE, IMAGE_SIZE, 3).transpose(0, 2, 1, 3, 4)
    plt.imsave(path, grid.reshape(n_id * IMAGE_SIZE, n_img * IMAGE_SIZE, 3))
    traits = sample_identities(1000, seed=0)
    render_faces(traits, np.arange(64), seed=0)
    t0 = time.perf_counter()
    render_faces(traits, np.arange(1000), seed=0)
    dt = time.perf_counter() - t0
    print(f"wrote {path}; 1000 images in {dt:.3f} s = {dt:.3f} ms/image")
