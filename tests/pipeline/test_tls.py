"""A TLS cluster: ``dask scheduler --protocol tls`` + one ``dask worker`` on 127.0.0.1.

A CA and one certificate (signed by it, for 127.0.0.1) are made on the fly with
``cryptography``; the scheduler, the worker and the clients use them.
:func:`bigquant.connect` and ``bigquant quantize --scheduler tls://…`` reach
the cluster with them, the scheduler's task stream shows that the work ran on
that worker, and without certificates the command fails in one line.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import time

import numpy as np
import pytest
from tests.support.processes import Spawned, dask_command

pytestmark = pytest.mark.distributed

REPO = pathlib.Path(__file__).resolve().parents[2]


def make_certificates(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A CA (``ca.pem``) and a certificate (``cert.pem``, key ``key.pem``) it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bigquant test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bigquant test node")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    paths["key"].chmod(0o600)
    return paths


def _security(certs: dict[str, pathlib.Path]):
    from distributed.security import Security

    return Security(tls_ca_file=str(certs["ca"]), tls_client_cert=str(certs["cert"]),
                    tls_client_key=str(certs["key"]), require_encryption=True)


def _stop(spawned: Spawned, address: str | None, certs: dict[str, pathlib.Path]) -> None:
    """Shut the cluster down cleanly, then make sure every process is gone."""
    if address is not None and any(p.poll() is None for p in spawned.procs):
        from distributed import Client

        try:
            with Client(address, timeout=5, set_as_default=False, security=_security(certs)) as client:
                client.shutdown()
        except Exception:
            pass
    spawned.close()  # the worker first, then the scheduler


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """(address, worker addresses, certificate paths) of a TLS scheduler with one worker."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("tls")
    certs = make_certificates(tmp)
    tls_args = ["--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])]
    spawned = Spawned(tmp)
    address: str | None = None
    try:
        address = spawned.scheduler("--protocol", "tls", *tls_args)
        assert address.startswith("tls://127.0.0.1:"), address
        spawned.spawn([*dask_command(), "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                       "--name", "tls-0", "--memory-limit", "2GiB", "--host", "127.0.0.1", *tls_args], "worker")
        with Client(address, timeout=30, security=_security(certs), set_as_default=False) as client:
            client.wait_for_workers(1, timeout=90)
            workers = set(client.scheduler_info(n_workers=-1)["workers"])
        yield address, workers, certs
    finally:
        _stop(spawned, address, certs)


@pytest.fixture
def observer(tls_cluster):
    """A client of the TLS cluster that reads the scheduler's task stream."""
    from distributed import Client

    address, _, certs = tls_cluster
    with Client(address, timeout=30, set_as_default=False, security=_security(certs)) as client:
        client.get_task_stream()  # installs the scheduler's task-stream plugin
        yield client


@pytest.fixture(scope="module")
def tiff(tmp_path_factory) -> pathlib.Path:
    from bigquant.io.sample import make_sample_tiff

    return make_sample_tiff(tmp_path_factory.mktemp("img") / "img.tif", size=(256, 384), tile=128, seed=3)


def _bq_prefixes(records: list[dict]) -> set[str]:
    from dask.utils import key_split

    return {key_split(r["key"]) for r in records if key_split(r["key"]).startswith("bq-")}


def test_connect_with_tls_files_runs_quantize_on_the_tls_worker(tls_cluster, observer, tiff, tmp_path):
    import tifffile

    from bigquant import quantize
    from bigquant.pipeline.runtime import connect

    address, workers, certs = tls_cluster
    start = time.time()
    with connect(address, tls_ca_file=certs["ca"], tls_cert=certs["cert"], tls_key=certs["key"], timeout=30) as rt:
        assert rt.scheduler_address == address
        assert set(rt.workers) == workers
        model = quantize(tiff, tmp_path / "q.tif", 4, client=rt.client, random_state=0, tile=128)
    expected = quantize(tiff, tmp_path / "local.tif", 4, random_state=0, tile=128)
    np.testing.assert_array_equal(model.cluster_centers_, expected.cluster_centers_)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q.tif"), tifffile.imread(tmp_path / "local.tif"))
    records = observer.get_task_stream(start=start)
    assert {r["worker"] for r in records} <= workers
    assert "bq-labels" in _bq_prefixes(records) or "bq-write" in _bq_prefixes(records), _bq_prefixes(records)


def test_connect_takes_a_security_object_and_dask_config(tls_cluster):
    import dask

    from bigquant.pipeline.runtime import connect

    address, workers, certs = tls_cluster
    with connect(address, security=_security(certs), timeout=30) as rt:
        assert set(rt.workers) == workers
        assert rt.client.submit(sum, [1, 2, 3], key="bq-tls-sum").result() == 6
    config = {"distributed.comm.tls.ca-file": str(certs["ca"]),
              "distributed.comm.tls.client.cert": str(certs["cert"]),
              "distributed.comm.tls.client.key": str(certs["key"])}
    with dask.config.set(config), connect(address, timeout=30) as rt:
        assert set(rt.workers) == workers


def test_cli_quantize_on_a_tls_scheduler(tls_cluster, observer, tiff, tmp_path, capsys):
    import tifffile

    from bigquant.cli import main

    address, workers, certs = tls_cluster
    start = time.time()
    out, local = tmp_path / "q.tif", tmp_path / "local.tif"
    argv = ["quantize", str(tiff), str(out), "-k", "6", "--scheduler", address, "--tile", "128",
            "--random-state", "0", "--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]),
            "--tls-key", str(certs["key"])]
    assert main(argv) == 0, capsys.readouterr().err
    assert f"connected to {address}: 1 workers" in capsys.readouterr().err
    records = observer.get_task_stream(start=start)
    assert records and {r["worker"] for r in records} <= workers
    assert {"bq-read", "bq-count"} <= _bq_prefixes(records), _bq_prefixes(records)
    assert main(["quantize", str(tiff), str(local), "-k", "6", "--no-cluster", "--tile", "128",
                 "--random-state", "0"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(local))


def test_cli_tls_scheduler_without_certificates_fails_in_one_line(tls_cluster, tiff, tmp_path, capsys):
    from bigquant.cli import main

    address, _, _ = tls_cluster
    code = main(["quantize", str(tiff), str(tmp_path / "q.tif"), "-k", "4", "--scheduler", address])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    assert address in err[0] and "--tls-ca-file" in err[0] and "--tls-cert" in err[0] and "--tls-key" in err[0]
    assert not (tmp_path / "q.tif").exists()


# ----------------------------------------------------------------- no cluster needed


def test_tls_options_are_checked_before_connecting(tmp_path):
    from bigquant.errors import ClusterConnectionError, InvalidParameterError
    from bigquant.pipeline.runtime import connect

    certs = make_certificates(tmp_path)
    files = {"tls_ca_file": certs["ca"], "tls_cert": certs["cert"], "tls_key": certs["key"]}
    with pytest.raises(ClusterConnectionError, match="--tls-ca-file, --tls-cert and --tls-key"):
        connect("tls://127.0.0.1:1", timeout=1)
    with pytest.raises(InvalidParameterError, match="not encrypted"):
        connect("tcp://127.0.0.1:1", timeout=1, **files)
    with pytest.raises(InvalidParameterError, match="no such file"):
        connect("tls://127.0.0.1:1", timeout=1, **{**files, "tls_key": tmp_path / "missing.pem"})
    with pytest.raises(InvalidParameterError, match="CA file and a certificate"):
        connect("tls://127.0.0.1:1", timeout=1, tls_cert=certs["cert"])
    with pytest.raises(InvalidParameterError, match="exclude each other"):
        connect("tls://127.0.0.1:1", timeout=1, security=_security(certs), tls_cert=certs["cert"])
    with pytest.raises(InvalidParameterError, match="local cluster"):
        connect(timeout=1, **files)


def test_cli_tls_flags_need_a_scheduler(tmp_path, capsys):
    from bigquant.cli import main

    certs = make_certificates(tmp_path)
    tiff = tmp_path / "in.tif"
    from bigquant.io.sample import make_sample_tiff

    make_sample_tiff(tiff, size=(64, 64), tile=64, seed=0)
    code = main(["quantize", str(tiff), str(tmp_path / "q.tif"), "-k", "2", "--tls-ca-file", str(certs["ca"])])
    assert code == 2
    assert "go with --scheduler tls://" in capsys.readouterr().err
