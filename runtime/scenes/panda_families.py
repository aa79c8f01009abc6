"""Build a `runtime.scenes.families.FamilyScene` in Panda3D (called on the Panda3D thread by
`runtime.scenes.panda_source`).

Shapes are meshes made here with their size baked in, so texture coordinates are in world metres
(a material's texture repeats every ``Material.metres``) and normals stay right under lighting.
Textures are mipmapped with trilinear, anisotropic filtering, so the truth a frame is judged
against does not shimmer with the sampling. The sky is a dome of vertex colours (horizon to zenith)
that follows the camera and draws behind everything without writing depth: it reads back as depth
+inf, content at infinity, as the built-in scenes' clear colour does.
"""

from __future__ import annotations

import math

import numpy as np

from runtime.scenes.families import FamilyScene, Material, Shape

_SKY_RADIUS = 150.0  # inside the far plane of every SceneConfig default; depth is not written anyway


def _mesh(p3d, name: str, vertices, normals, uvs, triangles, colours=None):
    """A GeomNode of triangles from arrays (vertices, normals [N, 3], uvs [N, 2], triangles [M, 3])."""
    n = len(vertices)
    if colours is None:
        fmt = p3d.GeomVertexFormat.getV3n3t2()
        data = np.concatenate([vertices, normals, uvs], axis=1).astype(np.float32)
    else:
        array = p3d.GeomVertexArrayFormat()
        array.addColumn("vertex", 3, p3d.Geom.NTFloat32, p3d.Geom.CPoint)
        array.addColumn("color", 4, p3d.Geom.NTFloat32, p3d.Geom.CColor)
        fmt = p3d.GeomVertexFormat.registerFormat(p3d.GeomVertexFormat(array))
        data = np.concatenate([vertices, colours, np.ones((n, 1))], axis=1).astype(np.float32)
    vdata = p3d.GeomVertexData(name, fmt, p3d.Geom.UHStatic)
    vdata.uncleanSetNumRows(n)
    vdata.modifyArray(0).modifyHandle().copyDataFrom(np.ascontiguousarray(data).tobytes())
    prim = p3d.GeomTriangles(p3d.Geom.UHStatic)
    prim.setIndexType(p3d.GeomEnums.NT_uint32)
    index = prim.modifyVertices()
    index.uncleanSetNumRows(3 * len(triangles))
    index.modifyHandle().copyDataFrom(np.ascontiguousarray(triangles, dtype=np.uint32).tobytes())
    geom = p3d.Geom(vdata)
    geom.addPrimitive(prim)
    node = p3d.GeomNode(name)
    node.addGeom(geom)
    return node


def _box(size, metres: float):
    """A box [-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz]: 6 faces, 24 vertices, outward normals."""
    sx, sy, sz = size
    hx, hy = sx / 2, sy / 2
    faces = [  # (normal, u axis, v axis, centre, half extents along u and v)
        ((1, 0, 0), (0, 1, 0), (0, 0, 1), (hx, 0, sz / 2), (hy, sz / 2)),
        ((-1, 0, 0), (0, -1, 0), (0, 0, 1), (-hx, 0, sz / 2), (hy, sz / 2)),
        ((0, 1, 0), (-1, 0, 0), (0, 0, 1), (0, hy, sz / 2), (hx, sz / 2)),
        ((0, -1, 0), (1, 0, 0), (0, 0, 1), (0, -hy, sz / 2), (hx, sz / 2)),
        ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, sz), (hx, hy)),
        ((0, 0, -1), (1, 0, 0), (0, -1, 0), (0, 0, 0), (hx, hy)),
    ]
    vertices, normals, uvs, triangles = [], [], [], []
    for k, (nrm, ua, va, c, (eu, ev)) in enumerate(faces):
        ua, va, c = np.asarray(ua, float), np.asarray(va, float), np.asarray(c, float)
        for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            p = c + su * eu * ua + sv * ev * va
            vertices.append(p)
            normals.append(nrm)
            uvs.append(((p @ ua) / metres, (p @ va) / metres))
        b = 4 * k
        triangles += [(b, b + 1, b + 2), (b, b + 2, b + 3)]  # counter-clockwise seen from outside
    return np.array(vertices), np.array(normals, float), np.array(uvs), np.array(triangles)


def _ellipsoid(size, metres: float, rings: int = 16, segments: int = 28, inward: bool = False):
    """An ellipsoid with semi-axes size / 2, its lowest point at z = 0 (or, ``inward``, centred)."""
    a, b, c = (s / 2 for s in size)
    lat = np.linspace(-math.pi / 2, math.pi / 2, rings + 1)
    lon = np.linspace(0, 2 * math.pi, segments + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    vertices = unit * (a, b, c)
    normals = unit / (a, b, c)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    mean = (a + b + c) / 3
    uvs = np.stack([lo.ravel() * mean / metres, (la.ravel() + math.pi / 2) * mean / metres], -1)
    triangles = []
    for i in range(rings):
        for j in range(segments):
            p, q = i * (segments + 1) + j, (i + 1) * (segments + 1) + j
            triangles += [(p, p + 1, q + 1), (p, q + 1, q)]
    triangles = np.array(triangles)
    if inward:
        triangles, normals = triangles[:, ::-1], -normals
    else:
        vertices = vertices + (0.0, 0.0, c)
    return vertices, normals, uvs, triangles


def _cylinder(size, metres: float, segments: int = 28):
    """A cylinder along z from 0 to sz, elliptic section size[0] x size[1], with a top cap."""
    a, b, h = size[0] / 2, size[1] / 2, size[2]
    lon = np.linspace(0, 2 * math.pi, segments + 1)
    ring = np.stack([a * np.cos(lon), b * np.sin(lon)], -1)
    nrm = np.stack([np.cos(lon) / a, np.sin(lon) / b, np.zeros_like(lon)], -1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    perimeter = lon * (a + b) / 2
    vertices = np.concatenate([np.c_[ring, np.zeros(len(lon))], np.c_[ring, np.full(len(lon), h)]])
    normals = np.concatenate([nrm, nrm])
    uvs = (
        np.concatenate([np.c_[perimeter, np.zeros(len(lon))], np.c_[perimeter, np.full(len(lon), h)]])
        / metres
    )
    m = len(lon)
    triangles = [(j, j + 1, m + j + 1) for j in range(segments)] + [
        (j, m + j + 1, m + j) for j in range(segments)
    ]
    top = len(vertices)  # the cap: a fan about the centre
    cap_v = np.concatenate([[[0.0, 0.0, h]], np.c_[ring, np.full(m, h)]])
    vertices = np.concatenate([vertices, cap_v])
    normals = np.concatenate([normals, np.tile((0.0, 0.0, 1.0), (m + 1, 1))])
    uvs = np.concatenate([uvs, cap_v[:, :2] / metres])
    triangles += [(top, top + 1 + j, top + 2 + j) for j in range(segments)]
    return vertices, normals, uvs, np.array(triangles)


def _texture(p3d, name: str, image: np.ndarray):
    h, w = image.shape[:2]
    tex = p3d.Texture(name)
    tex.setup2dTexture(w, h, p3d.Texture.TUnsignedByte, p3d.Texture.FRgb8)
    # Panda3D's images start at the bottom row; the RAM image is BGR
    tex.setRamImage(np.ascontiguousarray(image[::-1, :, ::-1]).tobytes())
    tex.setWrapU(p3d.SamplerState.WMRepeat)
    tex.setWrapV(p3d.SamplerState.WMRepeat)
    tex.setMinfilter(p3d.SamplerState.FTLinearMipmapLinear)
    tex.setMagfilter(p3d.SamplerState.FTLinear)
    tex.setAnisotropicDegree(8)
    tex.generateRamMipmapImages()
    return tex


def _apply(p3d, np_, material: Material, textures) -> None:
    if material.texture is not None:
        np_.setTexture(textures[material.texture], 1)
    np_.setColor(p3d.LColor(*material.colour, 1.0), 1)


def _add_shape(eng, root, shape: Shape, textures) -> None:
    p3d = eng.p3d
    if shape.kind.startswith("model:"):
        pivot = root.attachNewNode(shape.kind)
        model = eng.model(shape.kind[len("model:") :]).copyTo(pivot)
        lo, hi = model.getTightBounds(model)
        extent = max(hi.x - lo.x, hi.y - lo.y, hi.z - lo.z)
        scale = max(shape.size) / max(extent, 1e-6)
        model.setPos(-(lo.x + hi.x) / 2.0, -(lo.y + hi.y) / 2.0, -lo.z)
        pivot.setScale(scale)
        pivot.setTextureOff(1)
        pivot.setColor(p3d.LColor(*shape.material.colour, 1.0), 1)
    else:
        build = {"box": _box, "sphere": _ellipsoid, "cylinder": _cylinder}[shape.kind]
        node = _mesh(p3d, shape.kind, *build(shape.size, shape.material.metres))
        pivot = root.attachNewNode(node)
        _apply(p3d, pivot, shape.material, textures)
    pivot.setPos(*shape.centre)
    pivot.setH(shape.heading_deg)


def _add_ground(eng, root, scene: FamilyScene, textures) -> None:
    p3d, g = eng.p3d, scene.ground_half_m
    metres = scene.ground.metres
    corners = np.array([(-g, -g, 0.0), (g, -g, 0.0), (g, g, 0.0), (-g, g, 0.0)])
    node = _mesh(
        p3d, "ground", corners, np.tile((0.0, 0.0, 1.0), (4, 1)), corners[:, :2] / metres,
        np.array([(0, 1, 2), (0, 2, 3)]),
    )  # fmt: skip
    _apply(p3d, root.attachNewNode(node), scene.ground, textures)


def _add_sky(eng, root, scene: FamilyScene, camera) -> None:
    p3d, sky = eng.p3d, scene.sky
    vertices, _, _, triangles = _ellipsoid((2 * _SKY_RADIUS,) * 3, 1.0, rings=24, segments=36, inward=True)
    up = np.clip(vertices[:, 2] / _SKY_RADIUS, 0.0, 1.0) ** 0.6
    colours = np.asarray(sky.horizon) * (1 - up[:, None]) + np.asarray(sky.zenith) * up[:, None]
    dome = camera.attachNewNode(_mesh(p3d, "sky", vertices, None, None, triangles, colours=colours))
    dome.setCompass(root)  # follows the camera's position, keeps the world's orientation
    dome.setLightOff(1)
    dome.setDepthWrite(False)
    dome.setDepthTest(False)
    dome.setBin("background", 0)


def build_family(eng, root, scene: FamilyScene, camera, build_lights) -> None:
    """Add ``scene`` under ``root``: ground, shapes, sky dome (under ``camera``), lights."""
    textures = {name: _texture(eng.p3d, name, image) for name, image in scene.textures.items()}
    _add_ground(eng, root, scene, textures)
    for shape in scene.shapes:
        _add_shape(eng, root, shape, textures)
    if scene.sky is not None:
        _add_sky(eng, root, scene, camera)
    build_lights(eng, root, scene.sun_direction, scene.sun_colour, scene.ambient)
