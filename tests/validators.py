"""The DICOM standard's own checkers, run on a written file: dciodvfy (dicom3tools), dsrdump and
dcmpschk (DCMTK), PixelMed's DicomSRValidator. Each answers its complete output and the lines
that are errors, so a test can assert none and show them all when there are some."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
TOOLS = ("dciodvfy", "dsrdump", "dcmpschk", "java")


def missing_tools() -> list[str]:
    """Validators not installed (make install brings them all)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not PIXELMED_JAR.exists():
        missing.append(str(PIXELMED_JAR))
    return missing


@dataclass(frozen=True)
class Verdict:
    tool: str
    returncode: int
    output: str
    errors: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.tool} (exit {self.returncode}):\n{self.output}"


def _run(tool: str, command: list[str], error: re.Pattern[str]) -> Verdict:
    # The tools print header values (a patient name in its own character set) as bytes.
    done = subprocess.run(command, capture_output=True, timeout=600, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
    errors = tuple(line for line in output.splitlines() if error.search(line))
    return Verdict(tool, done.returncode, output, errors)


def dciodvfy(path: Path) -> Verdict:
    """dicom3tools' IOD checker: "Error - ..." lines (warnings are kept in the output)."""
    return _run("dciodvfy", ["dciodvfy", str(path)], re.compile(r"^\s*Error\b"))


def dsrdump(path: Path) -> Verdict:
    """DCMTK's SR reader: the document as text; any "E:" or "F:" line is an error."""
    return _run("dsrdump", ["dsrdump", "-Ee", str(path)], re.compile(r"^\s*[EF]:"))


def dcmpschk(path: Path) -> Verdict:
    """DCMTK's presentation state checker: "E:"/"F:" lines, its own "Error" lines and its
    verdict "Test failed"."""
    return _run(
        "dcmpschk", ["dcmpschk", str(path)], re.compile(r"^\s*[EF]:|\bError\b|Test failed")
    )


def pixelmed_sr(path: Path) -> Verdict:
    """PixelMed's DicomSRValidator (IOD and SR template rules): "Error" lines, and any Java
    exception or a run that never printed "IOD validation complete" (PixelMed exits 0 even
    when it stopped before validating). Its template XPath is over the JDK's default JAXP
    limits (it then stops at once, printing only a stack trace), so they are lifted; a
    24-slice SR needs more than 512 MB of heap."""
    verdict = _run(
        "DicomSRValidator",
        [
            "java",
            "-Xmx3g",
            "-Djdk.xml.xpathExprOpLimit=0",
            "-Djdk.xml.xpathExprGrpLimit=0",
            "-Djdk.xml.xpathTotalOpLimit=0",
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ],
        re.compile(r"^\s*Error\b|Exception|OutOfMemoryError"),
    )
    if "IOD validation complete" not in verdict.output:
        problem = "PixelMed did not complete its validation"
        return Verdict(verdict.tool, verdict.returncode, verdict.output, (*verdict.errors, problem))
    return verdict
