"""Degradations that are NOT the project's presets, restored through restore.py --aligned as a user would.

A measurement script kept with its results (not part of the package). Ground truths: every aligned 256-px crop
of five CelebA persons no prior run trained on (the crops `evaluate.py person=celeba_<n>` caches under
~/.cache/gpen_fewshot/prepared). Pipeline (its own, cv2 only; not the BSRGAN presets the prior trained on):
Gaussian blur -> INTER_AREA downscale -> Gaussian noise (per channel) -> cv2 JPEG -> INTER_LINEAR upscale
back to 256 px. Usage (ROOT = a work folder):

    python foreign_degradation_check.py make ROOT
    python restore.py -i ROOT/lq/f_moderate -o ROOT/restored/K/f_moderate/ --aligned -q  # each level, model
    python foreign_degradation_check.py table ROOT K E
"""

import glob
import os
import sys

import cv2
import numpy as np

ROOT = "."
LEVELS = {  # sigma, scale, noise (0-255), jpeg quality
    "f_mild": (0.7, 1, 3.0, 80),
    "f_moderate": (1.3, 2, 7.0, 55),
    "f_severe": (2.2, 4, 12.0, 40),
}
PERSONS = ["7201", "7222", "7237", "7315", "7317"]


def crops():
    out = []
    for n in PERSONS:
        d = glob.glob(os.path.expanduser(f"~/.cache/gpen_fewshot/prepared/celeba_{n}-*/256_gpen"))[0]
        out += sorted(glob.glob(f"{d}/*/*.png"))
    return out


def degrade(img, level, rng):
    sigma, scale, noise, q = LEVELS[level]
    x = cv2.GaussianBlur(img, (0, 0), sigma)
    if scale > 1:
        x = cv2.resize(x, (256 // scale, 256 // scale), interpolation=cv2.INTER_AREA)
    x = np.clip(x.astype(np.float32) + rng.normal(0, noise, x.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, q])
    x = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if scale > 1:
        x = cv2.resize(x, (256, 256), interpolation=cv2.INTER_LINEAR)
    return x


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def make():
    rng = np.random.default_rng(7)
    os.makedirs(f"{ROOT}/gt", exist_ok=True)
    for i, path in enumerate(crops()):
        name = f"{i:03d}.png"
        gt = cv2.imread(path)
        cv2.imwrite(f"{ROOT}/gt/{name}", gt)
        for level in LEVELS:
            os.makedirs(f"{ROOT}/lq/{level}", exist_ok=True)
            cv2.imwrite(f"{ROOT}/lq/{level}/{name}", degrade(gt, level, rng))


def table(models):
    names = sorted(os.listdir(f"{ROOT}/gt"))
    print(f"{len(names)} faces of 5 persons")
    for level in LEVELS:
        base = np.array(
            [psnr(cv2.imread(f"{ROOT}/lq/{level}/{n}"), cv2.imread(f"{ROOT}/gt/{n}")) for n in names]
        )
        row = [f"{level:11s} input {base.mean():.2f}"]
        for m in models:
            vals = []
            for n in names:
                out = cv2.imread(f"{ROOT}/restored/{m}/{level}/{n}")
                vals.append(psnr(out, cv2.imread(f"{ROOT}/gt/{n}")))
            d = np.array(vals) - base
            err = d.std(ddof=1) / np.sqrt(len(d))
            row.append(f"{m} {np.mean(vals):.2f} ({d.mean():+.2f} ± {err:.2f}, {np.mean(d > 0):.0%} better)")
        print(" | ".join(row))


if __name__ == "__main__":
    ROOT = sys.argv[2]
    if sys.argv[1] == "make":
        make()
    else:
        table(sys.argv[3:])
