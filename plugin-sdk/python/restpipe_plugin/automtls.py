"""go-plugin's automatic mutual TLS, in pure Python.

With AutoMTLS (restpipe's --plugin-mtls), the node puts a one-time client
certificate in PLUGIN_CLIENT_CERT; the plugin must serve gRPC over TLS,
require that certificate from its clients, and send its own one-time
certificate back in the handshake line (base64 of its DER, no padding). The
node then trusts only that certificate, for the name "localhost".

Python's standard library cannot make keys or certificates, and the SDK
needs nothing but grpcio and protobuf, so this module makes them itself: an
ECDSA P-256 key (the curve arithmetic below, constant-size scalars from the
secrets module), and a self-signed X.509 v3 certificate for "localhost"
valid for client and server authentication, as go-plugin's generateCert
makes (it uses P-521; any curve TLS accepts will do). It costs a few
milliseconds at start.

The arithmetic is not hardened against timing side channels: the key lives
only as long as the plugin process, and serves a Unix socket in a 0700
directory that only the node's user can reach.
"""

import base64
import datetime
import hashlib
import secrets

# NIST P-256.
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
      0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def _jdouble(p):
    x, y, z = p
    if y == 0 or z == 0:
        return (0, 1, 0)
    yy = y * y % _P
    s = 4 * x * yy % _P
    zz = z * z % _P
    m = 3 * (x - zz) * (x + zz) % _P  # a = -3
    x3 = (m * m - 2 * s) % _P
    y3 = (m * (s - x3) - 8 * yy * yy) % _P
    z3 = 2 * y * z % _P
    return (x3, y3, z3)


def _jadd(p, q):
    if p[2] == 0:
        return q
    if q[2] == 0:
        return p
    x1, y1, z1 = p
    x2, y2, z2 = q
    z1z1 = z1 * z1 % _P
    z2z2 = z2 * z2 % _P
    u1 = x1 * z2z2 % _P
    u2 = x2 * z1z1 % _P
    s1 = y1 * z2 * z2z2 % _P
    s2 = y2 * z1 * z1z1 % _P
    if u1 == u2:
        if s1 != s2:
            return (0, 1, 0)
        return _jdouble(p)
    h = (u2 - u1) % _P
    r = (s2 - s1) % _P
    hh = h * h % _P
    hhh = h * hh % _P
    v = u1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    y3 = (r * (v - x3) - s1 * hhh) % _P
    z3 = h * z1 * z2 % _P
    return (x3, y3, z3)


def _mul(k, point):
    """Returns k * point in affine coordinates (a Montgomery ladder over
    Jacobian ones)."""
    r0, r1 = (0, 1, 0), (point[0], point[1], 1)
    for i in range(255, -1, -1):
        if (k >> i) & 1:
            r0, r1 = _jadd(r0, r1), _jdouble(r1)
        else:
            r1, r0 = _jadd(r0, r1), _jdouble(r0)
    x, y, z = r0
    if z == 0:
        raise ValueError("point at infinity")
    zi = pow(z, -1, _P)
    zi2 = zi * zi % _P
    return (x * zi2 % _P, y * zi2 * zi % _P)


def on_curve(point):
    """Reports whether an affine point is on P-256."""
    x, y = point
    return (y * y - (x * x * x + _A * x + _B)) % _P == 0


def generate_key():
    """Returns a new P-256 key: (private scalar, public point)."""
    d = secrets.randbelow(_N - 1) + 1
    return d, _mul(d, _G)


def sign(d, data):
    """Returns the ECDSA-with-SHA-256 signature (r, s) of data."""
    e = int.from_bytes(hashlib.sha256(data).digest(), "big")
    while True:
        k = secrets.randbelow(_N - 1) + 1
        r = _mul(k, _G)[0] % _N
        if r == 0:
            continue
        s = pow(k, -1, _N) * (e + r * d) % _N
        if s != 0:
            return r, s


def verify(q, data, sig):
    """Reports whether sig = (r, s) is q's signature of data."""
    r, s = sig
    if not (0 < r < _N and 0 < s < _N):
        return False
    e = int.from_bytes(hashlib.sha256(data).digest(), "big")
    w = pow(s, -1, _N)
    a = _mul(e * w % _N, _G) if e * w % _N else None
    b = _mul(r * w % _N, q)
    if a is None:
        pt = b
    else:
        ja = _jadd((a[0], a[1], 1), (b[0], b[1], 1))
        if ja[2] == 0:
            return False
        zi = pow(ja[2], -1, _P)
        pt = (ja[0] * zi * zi % _P, 0)
    return pt[0] % _N == r


# -- DER -------------------------------------------------------------------


def _len(n):
    if n < 0x80:
        return bytes((n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(b),)) + b


def _tlv(tag, content):
    return bytes((tag,)) + _len(len(content)) + content


def _seq(*parts):
    return _tlv(0x30, b"".join(parts))


def _int(n):
    b = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")  # a leading zero keeps it positive
    return _tlv(0x02, b)


def _oid(dotted):
    nums = [int(x) for x in dotted.split(".")]
    out = bytearray((40 * nums[0] + nums[1],))
    for n in nums[2:]:
        enc = [n & 0x7F]
        n >>= 7
        while n:
            enc.append(0x80 | (n & 0x7F))
            n >>= 7
        out += bytes(reversed(enc))
    return _tlv(0x06, bytes(out))


def _bits(b):
    return _tlv(0x03, b"\x00" + b)


def _time(t):
    if t.year < 2050:
        return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())


_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_PRIME256V1 = "1.2.840.10045.3.1.7"
_ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def _point(q):
    return b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big")


def _name(cn, org):
    def rdn(oid, value):
        return _tlv(0x31, _seq(_oid(oid), _tlv(0x0C, value.encode())))
    return _seq(rdn("2.5.4.10", org), rdn("2.5.4.3", cn))


def certificate(d, q, host="localhost", now=None, days=3650):
    """Returns the DER of a self-signed certificate of key (d, q) for host,
    usable as a TLS client and server certificate (and as its own CA, as
    go-plugin's are)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    alg = _seq(_oid(_ECDSA_SHA256))
    name = _name(host, "restpipe plugin")
    spki = _seq(_seq(_oid(_EC_PUBLIC_KEY), _oid(_PRIME256V1)), _bits(_point(q)))
    ext = [
        # basicConstraints, critical: CA:TRUE
        _seq(_oid("2.5.29.19"), _tlv(0x01, b"\xff"), _tlv(0x04, _seq(_tlv(0x01, b"\xff")))),
        # keyUsage, critical: digitalSignature, keyAgreement, keyCertSign
        _seq(_oid("2.5.29.15"), _tlv(0x01, b"\xff"), _tlv(0x04, _tlv(0x03, b"\x02\x8c"))),
        # extKeyUsage: clientAuth, serverAuth
        _seq(_oid("2.5.29.37"), _tlv(0x04, _seq(_oid("1.3.6.1.5.5.7.3.2"), _oid("1.3.6.1.5.5.7.3.1")))),
        # subjectAltName: DNS host
        _seq(_oid("2.5.29.17"), _tlv(0x04, _seq(_tlv(0x82, host.encode())))),
    ]
    tbs = _seq(
        _tlv(0xA0, _int(2)),  # v3
        _int(secrets.randbits(127) | 1),
        alg,
        name,
        _seq(_time(now - datetime.timedelta(seconds=30)), _time(now + datetime.timedelta(days=days))),
        name,
        spki,
        _tlv(0xA3, _seq(*ext)),
    )
    r, s = sign(d, tbs)
    return _seq(tbs, alg, _bits(_seq(_int(r), _int(s))))


def private_key_der(d, q):
    """Returns the SEC 1 DER ("EC PRIVATE KEY") of key (d, q)."""
    return _seq(_int(1), _tlv(0x04, d.to_bytes(32, "big")), _tlv(0xA0, _oid(_PRIME256V1)), _tlv(0xA1, _bits(_point(q))))


def pem(kind, der):
    """Returns der as a PEM block of kind ("CERTIFICATE")."""
    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)).encode()


def server_identity():
    """Returns (certificate PEM, key PEM, handshake field): a new one-time
    identity for the plugin's side of AutoMTLS. The handshake field is the
    certificate's DER in unpadded base64, as go-plugin's line carries it."""
    d, q = generate_key()
    der = certificate(d, q)
    field = base64.b64encode(der).decode().rstrip("=")
    return pem("CERTIFICATE", der), pem("EC PRIVATE KEY", private_key_der(d, q)), field
