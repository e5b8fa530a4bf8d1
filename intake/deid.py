"""De-identification on ingest: what a device file may bring in, and what is kept.

DICOM: the Basic Application Level Confidentiality Profile of DICOM PS3.15 (Annex E,
Table E.1-1) is applied to every data set before anything is read from it, with the
"Retain Longitudinal Temporal Information with Full Dates" option (the examination
date is part of the clinical record; birth dates are not kept). pydicom has no
built-in profile and the maintained anonymisers replace values with fakes rather than
remove them, so the attributes the profile names are listed here, once, and removed;
so are every private attribute, curve and overlay group. What was removed is
returned as keywords and stored on the volume (``Volume.removed_tags``).

Only a few technical attributes survive into the records (laterality, dates, pixel
spacing, manufacturer and model, frame geometry) and the pixels, re-encoded as PNG
without metadata. The device's patient id never is: it is mapped to the pseudonymous
patient by ``patient_pseudonym`` (HMAC-SHA256 under the installation key
``OCT_PATIENT_KEY``), so a later visit from the same device lands on the same patient
while the id itself cannot be read back.
"""
from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

PATIENT_PREFIX = "DEV-"

# DICOM PS3.15 Table E.1-1, Basic Profile: attributes to remove, empty or replace.
# Removing them all is allowed by the profile for every action code (D, Z, X, U) on
# what this application keeps, since nothing of the header is stored as DICOM.
# Dates of the acquisition (StudyDate, ContentDate, AcquisitionDate(Time), SeriesDate)
# are retained under the Full Dates option; their times are removed.
BASIC_PROFILE_KEYWORDS: tuple[str, ...] = (
    "AccessionNumber", "AcquisitionComments", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdditionalPatientHistory",
    "AddressTrial", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "Arbitrary", "AuthorObserverSequence",
    "BranchOfService", "CommentsOnThePerformedProcedureStep", "ConfidentialityConstraintOnPatientDataDescription",
    "ContentCreatorName", "ContentCreatorIdentificationCodeSequence", "ContentTime", "ContributionDescription",
    "CountryOfResidence", "CurrentPatientLocation", "CustodialOrganizationSequence", "DataSetTrailingPadding",
    "DerivationDescription", "DetectorID", "DeviceSerialNumber", "DeviceUID", "DigitalSignaturesSequence",
    "DischargeDiagnosisDescription", "DistributionAddress", "DistributionName", "EthnicGroup",
    "FrameComments", "GantryID", "GeneratorID", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "Impressions", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence", "InterpretationApproverSequence",
    "InterpretationAuthor", "InterpretationDiagnosisDescription", "InterpretationIDIssuer",
    "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber", "IssuerOfAdmissionID",
    "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "MedicalAlerts", "MedicalRecordLocator",
    "MilitaryRank", "ModifiedAttributesSequence", "ModifyingDeviceID", "ModifyingDeviceManufacturer",
    "NameOfPhysiciansReadingStudy", "NamesOfIntendedRecipientsOfResults", "Occupation",
    "OperatorIdentificationSequence", "OperatorsName", "OriginalAttributesSequence", "OrderCallbackPhoneNumber",
    "OrderEnteredBy", "OrderEntererLocation", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "ParticipantSequence", "PatientAddress", "PatientAge", "PatientBirthDate", "PatientBirthName",
    "PatientBirthTime", "PatientComments", "PatientID", "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientName", "PatientPrimaryLanguageCodeSequence",
    "PatientPrimaryLanguageModifierCodeSequence", "PatientReligiousPreference", "PatientSex",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelephoneNumbers", "PatientTransportArrangements",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedStationAETitle",
    "PerformedStationGeographicLocationCodeSequence", "PerformedStationName",
    "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName",
    "PersonAddress", "PersonIdentificationCodeSequence", "PersonName", "PersonTelephoneNumbers",
    "PhysicianApprovingInterpretation", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "PlacerOrderNumberImagingServiceRequest",
    "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForStudy", "ReasonForTheImagingServiceRequest",
    "ReasonForTheRequestedProcedure", "ReferencedPatientAliasSequence", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence",
    "ReferringPhysicianName", "ReferringPhysicianTelephoneNumbers", "RegionOfResidence",
    "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation",
    "RequestingPhysician", "RequestingService", "ResponsibleOrganization", "ResponsiblePerson",
    "ResultsComments", "ResultsDistributionListSequence", "ResultsIDIssuer", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName", "ScheduledStationNameCodeSequence",
    "ScheduledStudyLocation", "ScheduledStudyLocationAETitle", "SeriesDescription", "SeriesTime",
    "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus", "SourceImageSequence",
    "SpecialNeeds", "StationName", "StudyComments", "StudyDescription", "StudyID", "StudyIDIssuer",
    "StudyTime", "AcquisitionTime", "TextComments", "TextString", "TimezoneOffsetFromUTC", "TopicAuthor",
    "TopicKeywords", "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence",
    "VerifyingObserverName", "VerifyingObserverSequence", "VerifyingOrganization", "VisitComments",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID", "ClinicalTrialCoordinatingCenterName", "InstanceCreatorUID",
    "ReferencedFrameOfReferenceUID", "StorageMediaFileSetUID", "ReferencedSOPInstanceUIDInFile",
    "IrradiationEventUID", "CreatorVersionUID", "TransactionUID",
    # UIDs: used in memory to group a series and pair its localizer, then dropped.
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID",
)

# Fields of the Heyex exports (read through eyepy) that identify a person.
HEYEX_PATIENT_FIELDS: tuple[str, ...] = ("firstname", "lastname", "dob", "pid", "patient_id", "id", "visit_id")


def _profile_tags() -> dict[int, str]:
    tags = {}
    for keyword in BASIC_PROFILE_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is None:  # pragma: no cover - a typo in the list above
            raise ValueError(f"unknown DICOM keyword {keyword}")
        tags[tag] = keyword
    return tags


PROFILE_TAGS = _profile_tags()


def _strip(ds: Dataset, removed: set[str]) -> None:
    # One pass over the data set's tags (a multi-frame OPT nests a data set per frame;
    # looking up each of the profile's keywords in each of them was most of the read).
    for tag in [t for t in ds.keys() if t in PROFILE_TAGS]:
        del ds[tag]
        removed.add(PROFILE_TAGS[tag])
    for elem in list(ds):
        group = elem.tag.group
        if elem.tag.is_private:
            del ds[elem.tag]
            removed.add("(private attributes)")
        elif 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            del ds[elem.tag]
            removed.add("(curves and overlays)")
        elif elem.VR == "SQ":
            for item in elem.value:
                _strip(item, removed)


def dicom_deidentify(ds: Dataset) -> tuple[str | None, list[str]]:
    """Apply the Basic Profile to ``ds`` in place; return the device patient id and what went.

    The id is returned only so the caller can map it through ``patient_pseudonym`` at
    once; it must not be stored. The file meta information (group 0002) is left, as it
    holds only the transfer syntax and the sender's implementation.
    """
    raw_id = str(ds.get("PatientID", "") or "").strip() or None
    removed: set[str] = set()
    _strip(ds, removed)
    return raw_id, sorted(removed)


def patient_pseudonym(device_patient_id: str) -> str:
    """The pseudonymous patient identifier of a device's patient id (keyed HMAC-SHA256).

    Deterministic under one installation key, so a later visit maps to the same
    patient; without the key the id cannot be recovered or confirmed by guessing.
    """
    key = settings.OCT_PATIENT_KEY.encode("utf-8")
    digest = hmac.new(key, device_patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return PATIENT_PREFIX + digest[:32]
