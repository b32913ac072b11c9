"""No DICOM value that names a person or a place reaches an error message or the slices' meta:
whatever its group, value representation, character set or letter case, and whether a library
or our own message would quote it."""

import io
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_files import dataset, to_bytes
from mriscribe.errors import InputError, UnsupportedFormatError
from mriscribe.imaging import dicom
from mriscribe.imaging.dicom import _reason, decode_dicom
from mriscribe.imaging.limits import Limits


def read(ds: Dataset) -> Dataset:
    """``ds`` as the decoder has it: written, then read back from its bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def failing_decode(monkeypatch, data: bytes, quoted: str) -> str:
    """The message of a decode whose pixel decoder fails quoting ``quoted``: no decoder
    message seen so far quotes header values, but one could."""

    def fail(*args: object, **kwargs: object):
        raise ValueError(f"bad frame near {quoted} here")

    monkeypatch.setattr(dicom, "iter_pixels", fail)
    with pytest.raises(InputError, match=r"cannot be decoded") as caught:
        decode_dicom(data, "x.dcm", Limits())
    message = str(caught.value)
    assert "bad frame near" in message and "here" in message
    return message


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"]
)
def test_stations_uris_long_text_and_private_values_are_scrubbed(monkeypatch, syntax):
    ds = dataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.SourceApplicationEntityTitle = "STMARYS_MR3"  # AE: the sending station
    ds.StationName = "Radiology West"
    ds.add_new(0x00400241, "AE", "NEURO_SUITE")  # Performed Station AE Title
    ds.add_new(0x00081190, "UR", "https://pacs.stmarys.example/wado")  # Retrieve URL
    ds.add_new(0x00400254, "LO", "Follow-up, Okafor")  # Performed Procedure Step Description
    # A private element: read from an implicit VR file, its VR is unknown.
    ds.private_block(0x0029, "ACME 1.1", create=True).add_new(0x10, "LO", "Okonkwo Ward")
    request = Dataset()
    request.add_new(0x00321033, "LO", "Dr Adebayo Clinic")  # Requesting Service
    ds.RequestAttributesSequence = Sequence([request])
    secrets = (
        "STMARYS_MR3",
        "Radiology West",
        "NEURO_SUITE",
        "pacs.stmarys.example",  # a URI's host alone
        "Follow-up, Okafor",
        "Okonkwo Ward",
        "Dr Adebayo Clinic",
    )
    message = failing_decode(monkeypatch, to_bytes(ds), " / ".join(secrets))
    for secret in secrets:
        assert secret not in message, message


def test_a_name_is_scrubbed_in_any_letter_case_and_word_by_word():
    ds = dataset()
    ds.PatientName = "Doe^Mary Ann"
    ds = read(ds)
    assert _reason(ValueError("value DOE for MARY ANN, also ann and mary"), ds) == (
        "value ... for ..., also ... and ..."
    )


def test_a_two_letter_surname_is_scrubbed_where_it_stands_as_a_word():
    ds = dataset()
    ds.PatientName = "Li^Wei"
    ds.ReferringPhysicianName = "Ng^A"
    ds = read(ds)
    reason = _reason(ValueError("Li at Lima, Ng near Ngong, a line of Wei"), ds)
    assert reason == "... at Lima, ... near Ngong, a line of ..."


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 144", "Иванов^Пётр"),  # Cyrillic: Latin-1 and UTF-8 decodes of it are gibberish
        ("ISO_IR 126", "Παπαδόπουλος^Νίκος"),  # Greek
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # code extensions
    ],
)
def test_names_in_other_character_sets_are_scrubbed_as_pydicom_reads_them(charset, name):
    # Each component alone, as a message would quote it: a Latin-1 or UTF-8 reading of the
    # stored bytes holds none of them.
    ds = dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    native = name.split("=")[-1].split("^")[0]
    assert native.encode() not in to_bytes(ds)  # stored in the declared set, not as UTF-8
    ds = read(ds)
    parts = [part for group in name.split("=") for part in group.split("^")]
    reason = _reason(ValueError(f"cannot read {' '.join(parts)} today"), ds)
    assert reason == "cannot read " + " ".join("..." for _ in parts) + " today"


def test_an_item_inherits_its_datasets_character_set():
    ds = dataset()
    ds.SpecificCharacterSet = "ISO_IR 144"
    request = Dataset()
    request.add_new(0x00321033, "LO", "Клиника Сидорова")
    ds.RequestAttributesSequence = Sequence([request])
    assert _reason(ValueError("at Клиника Сидорова now"), read(ds)) == "at ... now"


def test_python_literals_with_escaped_quotes_go_whole():
    # pydicom quotes raw values as bytes literals; an escaped quote must not end one early.
    reason = _reason(ValueError(r"""received b'O\'Neil "Ward" Hall' of length 18"""))
    assert reason == "received ... of length 18"
    reason = _reason(ValueError(r"""value 'Dr \'Bo\' Hall' and "St \"Kit\" Hill" there"""))
    assert reason == "value ... and ... there"


def test_a_modality_that_is_no_defined_term_is_never_shown():
    ds = dataset()
    ds.Modality = "SMITH JOHN"  # a code string as a careless writer fills it
    (decoded,) = decode_dicom(to_bytes(ds), "x.dcm", Limits())
    assert decoded.meta["modality"] == ""
    plan = dataset("rtplan.dcm")
    plan.Modality = "SMITH JOHN"
    with pytest.raises(InputError, match=r"^x\.dcm: DICOM file has no image \(Modality \?\)$"):
        decode_dicom(to_bytes(plan), "x.dcm", Limits())


def test_an_unregistered_transfer_syntax_is_refused_without_its_uid():
    ds = dataset()
    uid = "1.2.826.0.1.3680043.9.7133.1.1"  # an organisation's root names its maker
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    with pytest.raises(UnsupportedFormatError) as caught:
        decode_dicom(to_bytes(ds), "x.dcm", Limits())
    assert str(caught.value) == (
        "x.dcm: DICOM transfer syntax (an unregistered UID) is not supported"
    )
