from tests.factories import ScanFactory


def test_scan_factory_stores_both_files(db):
    scan = ScanFactory()
    assert scan.original.storage.exists(scan.original.name)
    assert scan.image.storage.exists(scan.image.name)
    assert len(scan.sha256) == 64
