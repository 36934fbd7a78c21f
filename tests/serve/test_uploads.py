"""Upload checks as pure functions: NIfTI header sniffing and the zip checks, on hand-made files."""

from __future__ import annotations

import gzip
import stat
import struct
import zipfile

import numpy as np
import pytest

from medfoundry.serve.uploads import (
    UploadError,
    UploadLimits,
    check_nifti_header,
    check_zip,
    extract_zip_safely,
    sniff_upload,
    upload_kind,
)


def nifti1_header(dims=(4, 5, 6), bitpix=16) -> bytes:
    h = bytearray(348)
    h[0:4] = struct.pack("<i", 348)
    d = [len(dims), *dims] + [1] * (7 - len(dims))
    h[40:56] = struct.pack("<8h", *d)
    h[72:74] = struct.pack("<h", bitpix)
    h[344:348] = b"n+1\0"
    return bytes(h)


def test_upload_kind_by_name():
    assert upload_kind("a.NII.GZ") == "nifti" and upload_kind("b.nii") == "nifti"
    assert upload_kind("series.zip") == "zip"
    for bad in ("notes.txt", "x.nii.gz.exe", "model.pt", "a.pkl", "x.gz"):
        with pytest.raises(UploadError) as e:
            upload_kind(bad)
        assert e.value.status == 415


def test_nifti_header_checks():
    assert check_nifti_header(nifti1_header(), 10**6) == (4, 5, 6)
    for junk in (b"hello world" * 40, b"ab", nifti1_header()[:300]):
        with pytest.raises(UploadError, match="not a NIfTI"):
            check_nifti_header(junk, 10**6)
    with pytest.raises(UploadError, match="dimensions"):
        check_nifti_header(nifti1_header((0, 5, 6)), 10**6)
    with pytest.raises(UploadError, match="bits per voxel"):
        check_nifti_header(nifti1_header(bitpix=13), 10**6)
    with pytest.raises(UploadError, match="too large") as e:  # a header promising 8 G voxels
        check_nifti_header(nifti1_header((2048, 2048, 2048)), 2**27)
    assert e.value.status == 413


def test_sniff_reads_gzip_and_refuses_other_content(tmp_path):
    good = tmp_path / "a.nii.gz"
    good.write_bytes(gzip.compress(nifti1_header() + b"\0" * 4 + np.zeros(120, "<i2").tobytes()))
    sniff_upload(good, "nifti", UploadLimits())
    text = tmp_path / "b.nii.gz"
    text.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(UploadError, match="not a NIfTI") as e:
        sniff_upload(text, "nifti", UploadLimits())
    assert e.value.status == 415
    broken = tmp_path / "c.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + b"\xff" * 50)
    with pytest.raises(UploadError, match="corrupt gzip"):
        sniff_upload(broken, "nifti", UploadLimits())
    with pytest.raises(UploadError, match="not a zip"):
        sniff_upload(good, "zip", UploadLimits())


def _zip(path, members: dict[str, bytes], link: str | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("members", "link", "match"),
    [
        ({"../../evil.txt": b"x"}, None, r"\.\."),
        ({"a/../../evil.txt": b"x"}, None, r"\.\."),
        ({"/etc/evil.txt": b"x"}, None, "absolute"),
        ({"C:/evil.txt": b"x"}, None, "absolute"),
        ({"ok.dcm": b"x"}, "series/link.dcm", "symbolic link"),
        ({"bomb.dcm": b"\0" * 20_000_000}, None, "zip bomb"),
        ({f"{i}.dcm": b"x" for i in range(70)}, None, "members"),
        ({}, None, "no files"),
    ],
)
def test_bad_zips_are_refused_before_extraction(tmp_path, members, link, match):
    z = _zip(tmp_path / "in.zip", members, link)
    dest = tmp_path / "job" / "dicom"
    with pytest.raises(UploadError, match=match):
        extract_zip_safely(z, dest, UploadLimits(max_zip_members=64))
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.zip"]


def test_total_size_cap_and_good_zip(tmp_path):
    data = {f"s/{i:02d}.dcm": np.random.default_rng(i).bytes(1000) for i in range(5)}
    z = _zip(tmp_path / "in.zip", data)
    with pytest.raises(UploadError, match="expands to"):
        check_zip(z, UploadLimits(max_zip_total_bytes=4000))
    series = extract_zip_safely(z, tmp_path / "job", UploadLimits())
    assert series == (tmp_path / "job" / "s").resolve()
    assert sorted(p.name for p in series.iterdir()) == sorted(n[2:] for n in data)
