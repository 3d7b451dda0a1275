"""The toy cats: cartoon cat faces drawn with Pillow, the training data when train.py gets no --data.

Each face varies in fur colour and pattern (solid, tabby, calico, white blaze), ear size and angle,
eye colour, pupils and gaze, nose, mouth and whiskers, head tilt, zoom and position, and background,
with mild noise on top. data.toy_cats draws many; to look at them: python data.py --preview toy.png
"""
import math

from PIL import Image, ImageDraw

FUR = {"black": (28, 26, 30), "white": (236, 232, 226), "ginger": (222, 132, 52), "grey": (128, 130, 138),
       "cream": (236, 204, 160), "brown": (112, 78, 52)}
EYES = [(90, 170, 60), (220, 190, 40), (230, 140, 30), (80, 150, 220), (170, 190, 60), (190, 100, 30)]


def draw_toy_cat(rng, size):
    """One cartoon cat face drawn with Pillow from random generator rng -> RGB PIL image, size x size."""
    big = 2 * size  # draw at twice the size, then shrink: smooth (anti-aliased) edges
    # Background: vertical gradient between two random colours (a 1x2 image stretched bilinearly).
    grey = rng.randrange(40, 220)  # mostly muted colours, like rooms, sofas and gardens behind real cats
    top, bottom = [tuple((grey + rng.randrange(30, 230)) // 2 for _ in range(3)) for _ in range(2)]
    gradient = Image.new("RGB", (1, 2))
    gradient.putdata([top, bottom if rng.random() < 0.6 else top])
    canvas = gradient.resize((big, big), Image.BILINEAR)

    # Fur: a pattern drawn over the whole layer, later cut to the head's silhouette.
    fur_name = rng.choice(list(FUR))
    fur_color = FUR[fur_name]
    dark = tuple(max(0, c - 70) for c in fur_color)
    fur = Image.new("RGB", (big, big), fur_color)
    paint = ImageDraw.Draw(fur)
    cx, cy = big / 2, big * rng.uniform(0.56, 0.62)  # face centre
    head_w, head_h = big * rng.uniform(0.40, 0.48), big * rng.uniform(0.34, 0.40)  # half-axes of the head
    pattern = rng.choice(["solid", "tabby", "calico", "bicolour"])
    if pattern == "tabby":  # stripes on the forehead and the cheeks
        for k in (-1, 0, 1):
            x = cx + k * head_w * 0.22
            paint.line([(x, cy - head_h * 1.1), (x + k * 4, cy - head_h * 0.45)], fill=dark, width=5)
        for side in (-1, 1):
            for k in range(3):
                y = cy + head_h * (-0.05 + 0.2 * k)
                paint.line([(cx + side * head_w, y), (cx + side * head_w * 0.62, y - 4)], fill=dark, width=4)
    elif pattern == "calico":  # ginger and black patches
        for color in (FUR["ginger"], FUR["black"]) * rng.randint(1, 2):
            px, py, r = rng.uniform(0, big), rng.uniform(0, big * 0.75), rng.uniform(14, 30)
            paint.ellipse([px - r, py - r * 0.8, px + r, py + r * 0.8], fill=color)
    if pattern == "bicolour" or (pattern == "calico" and rng.random() < 0.5):  # white blaze, muzzle and chin
        muzzle_w = head_w * rng.uniform(0.35, 0.6)
        blaze_y = cy + head_h * 0.2
        blaze = [(cx, cy - head_h * 0.8), (cx - muzzle_w * 0.6, blaze_y), (cx + muzzle_w * 0.6, blaze_y)]
        paint.polygon(blaze, fill=FUR["white"])
        paint.ellipse([cx - muzzle_w, cy + head_h * 0.05, cx + muzzle_w, cy + head_h * 1.2], fill=FUR["white"])

    # Silhouette: head ellipse plus two triangular ears, each with its own size and outward angle.
    silhouette = Image.new("L", (big, big), 0)
    shape = ImageDraw.Draw(silhouette)
    shape.ellipse([cx - head_w, cy - head_h, cx + head_w, cy + head_h], fill=255)
    ear_size, ear_spread = rng.uniform(0.55, 0.85) * head_h, rng.uniform(0.15, 0.55)
    inner_ear = (230, 150, 150) if fur_name != "black" else (120, 80, 90)
    ears = []
    for side in (-1, 1):
        base_x, base_y = cx + side * head_w * 0.62, cy - head_h * 0.62
        angle = side * ear_spread + rng.uniform(-0.08, 0.08)  # radians away from vertical
        tip = (base_x + math.sin(angle) * ear_size * 1.5, base_y - math.cos(angle) * ear_size * 1.5)
        outer = [(base_x - side * ear_size * 0.55, base_y - ear_size * 0.3), tip,
                 (base_x + side * ear_size * 0.75, base_y + ear_size * 0.4)]
        shape.polygon(outer, fill=255)
        ears.append([(0.55 * x + 0.45 * base_x, 0.55 * y + 0.45 * (base_y + 6)) for x, y in outer])  # pink inside
    cat = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    cat.paste(fur, mask=silhouette)
    face = ImageDraw.Draw(cat)
    for inner in ears:
        face.polygon(inner, fill=inner_ear)

    # Eyes: iris colour and size, round or slit pupils, a shared gaze direction, a highlight.
    eye_r, eye_dx = head_h * rng.uniform(0.2, 0.3), head_w * rng.uniform(0.36, 0.46)  # radius, distance from centre
    eye_y = cy - head_h * rng.uniform(0.05, 0.2)
    iris = rng.choice(EYES)
    pupil_w = eye_r * (rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(0.12, 0.22))
    pupil_h = eye_r * rng.uniform(0.6, 0.85)
    gaze_x, gaze_y = rng.uniform(-0.35, 0.35) * eye_r, rng.uniform(-0.2, 0.2) * eye_r
    for side in (-1, 1):
        ex = cx + side * eye_dx
        face.ellipse([ex - eye_r, eye_y - eye_r * 0.85, ex + eye_r, eye_y + eye_r * 0.85],
                     fill=iris, outline=(20, 20, 20), width=2)
        px, py = ex + gaze_x, eye_y + gaze_y
        face.ellipse([px - pupil_w, py - pupil_h, px + pupil_w, py + pupil_h], fill=(10, 10, 12))
        glint = [px - eye_r * 0.5, py - eye_r * 0.5, px - eye_r * 0.2, py - eye_r * 0.2]
        face.ellipse(glint, fill=(250, 250, 250))

    # Nose, mouth and whiskers.
    nose_y, nose_r = cy + head_h * rng.uniform(0.22, 0.32), head_w * rng.uniform(0.07, 0.11)
    nose = rng.choice([(230, 120, 130), (60, 40, 40), (200, 110, 100)])
    nose_top, nose_tip = nose_y - nose_r * 0.6, nose_y + nose_r * 0.6
    face.polygon([(cx - nose_r, nose_top), (cx + nose_r, nose_top), (cx, nose_tip)], fill=nose)
    line = (40, 30, 30) if fur_name not in ("black", "brown") else (150, 140, 140)
    mouth_y = nose_y + nose_r * 1.5
    face.line([(cx, nose_tip), (cx, mouth_y)], fill=line, width=2)
    for left in (cx - nose_r * 1.6, cx):  # two lower half-circles: the cartoon "w" mouth
        face.arc([left, mouth_y - nose_r, left + nose_r * 1.6, mouth_y + nose_r * 0.6], 0, 180, fill=line, width=2)
    whisker = (245, 245, 245) if fur_name in ("black", "brown", "grey") else (60, 50, 50)
    for side in (-1, 1):
        for k in range(rng.randint(2, 3)):
            end = (cx + side * head_w * rng.uniform(1.0, 1.25), nose_y - 6 + k * 9 + rng.uniform(-4, 4))
            face.line([(cx + side * nose_r * 2.2, nose_y + k * 4), end], fill=whisker, width=1)

    # Head pose: tilt, zoom and shift in one affine warp, then composite over the background.
    tilt, zoom = math.radians(rng.uniform(-18, 18)), rng.uniform(1.0, 1.25)
    shift_x, shift_y = rng.uniform(-8, 8), rng.uniform(-6, 6)
    cos, sin = math.cos(tilt) / zoom, math.sin(tilt) / zoom  # maps each output pixel back to the drawing
    ox, oy = big / 2 + shift_x, big / 2 + shift_y
    warp = (cos, sin, big / 2 - cos * ox - sin * oy, -sin, cos, big / 2 + sin * ox - cos * oy)
    cat = cat.transform((big, big), Image.AFFINE, warp, Image.BILINEAR)
    canvas.paste(cat, mask=cat)
    small = canvas.reduce(2)  # average each 2x2 block: anti-aliased edges
    noise = Image.frombytes("RGB", small.size, rng.randbytes(3 * size * size))  # uniform 0..255
    return Image.blend(small, noise, 0.05)  # 5% of uniform noise: grain of about +-6 levels, 5% less contrast
