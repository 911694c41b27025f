"""Media in an S3-compatible bucket (AWS S3, MinIO, R2, moto in tests), via boto3.

URLs are ``{s3_public_url}/{key}`` when the bucket is public behind a CDN, else
presigned GET URLs valid for ``s3_presign_seconds`` (at most 7 days, S3's limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError as BotoClientError

from openfal.config import Settings
from openfal.errors import BadRequest, ConfigError, PayloadTooLarge
from openfal.media.names import files_key, is_valid_key
from openfal.models import MediaBlob

_CHUNK = 1024 * 1024


class S3MediaStore:
    def __init__(self, settings: Settings) -> None:
        if not settings.s3_bucket:
            raise ConfigError("OPENFAL_S3_BUCKET is required when OPENFAL_MEDIA_BACKEND=s3")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.public_url = settings.s3_public_url.rstrip("/") if settings.s3_public_url else None
        self.presign_seconds = settings.s3_presign_seconds
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4"),
        )

    async def put(self, blob: MediaBlob, key: str) -> None:
        extra = {"ContentType": blob.content_type}
        if isinstance(blob.data, bytes):
            await asyncio.to_thread(
                self.client.put_object, Bucket=self.bucket, Key=self.prefix + key, Body=blob.data, **extra
            )
        else:
            await asyncio.to_thread(
                self.client.upload_file, str(blob.data), self.bucket, self.prefix + key, ExtraArgs=extra
            )

    def url(self, key: str, base_url: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{self.prefix}{key}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key}, ExpiresIn=self.presign_seconds
        )

    def key_of(self, url: str) -> str | None:
        """``/files/{key}`` on any host, ``{s3_public_url}/{prefix}{key}``, and bucket URLs
        (path style ``{endpoint}/{bucket}/{prefix}{key}`` or virtual-host style), signed or not."""
        own = files_key(url)
        if own is not None:
            return own
        if not url.startswith(("http://", "https://")):
            return None
        try:
            return self._bucket_key(url)
        except ValueError:  # an unparseable URL names no file of ours
            return None

    def _bucket_key(self, url: str) -> str | None:
        if self.public_url and url.startswith(f"{self.public_url}/"):
            path = urlsplit(url).path[len(urlsplit(self.public_url).path) :]
        else:
            parts = urlsplit(url)
            path = parts.path
            if parts.hostname and parts.hostname.startswith(f"{self.bucket}."):
                pass  # virtual-host style: the path is the object key
            elif path.startswith(f"/{self.bucket}/"):
                path = path[len(self.bucket) + 1 :]
            else:
                return None
        key = unquote(path.lstrip("/"))
        if not key.startswith(self.prefix):
            return None
        key = key[len(self.prefix) :]
        return key if is_valid_key(key) else None

    async def size(self, key: str) -> int | None:
        try:
            head = await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self.prefix + key)
        except BotoClientError as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return int(head["ContentLength"])

    async def chunks(self, key: str) -> AsyncIterator[bytes]:
        reply = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)
        body = reply["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, _CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self.prefix + key)

    # Multipart uploads map onto S3's own, so parts go straight to the bucket and S3 joins them.

    async def begin_upload(self, key: str, content_type: str) -> str:
        reply = await asyncio.to_thread(
            self.client.create_multipart_upload, Bucket=self.bucket, Key=self.prefix + key, ContentType=content_type
        )
        return str(reply["UploadId"])

    async def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        try:
            reply = await asyncio.to_thread(
                self.client.upload_part, Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id, PartNumber=number, Body=data
            )
        except BotoClientError as exc:
            raise _client_error(exc) from None
        return str(reply["ETag"])

    async def finish_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]], max_bytes: int) -> int:
        ids = {"Bucket": self.bucket, "Key": self.prefix + key, "UploadId": upload_id}
        try:
            stored = await asyncio.to_thread(self._part_sizes, ids)
        except BotoClientError as exc:
            done = await self.size(key) if _error_code(exc) == "NoSuchUpload" else None
            if done is not None:  # completed already: a client retrying its "complete"
                return done
            raise _client_error(exc) from None
        try:
            wanted = sorted(parts)
            missing = [number for number, _ in wanted if number not in stored]
            if missing:
                raise BadRequest(f"Parts never uploaded: {missing}")
            size = sum(stored[number] for number, _ in wanted)
            if size > max_bytes:
                await asyncio.to_thread(self.client.abort_multipart_upload, **ids)
                raise PayloadTooLarge(f"Upload larger than {max_bytes} bytes")
            etags = [{"PartNumber": number, "ETag": etag if etag.startswith('"') else f'"{etag}"'} for number, etag in wanted]
            await asyncio.to_thread(self.client.complete_multipart_upload, MultipartUpload={"Parts": etags}, **ids)
        except BotoClientError as exc:
            raise _client_error(exc) from None
        return size

    def _part_sizes(self, ids: dict[str, str]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for page in self.client.get_paginator("list_parts").paginate(**ids):
            sizes.update({part["PartNumber"]: part["Size"] for part in page.get("Parts", [])})
        return sizes

    async def purge_stale_uploads(self, started_before: float) -> int:
        return await asyncio.to_thread(self._purge_uploads, started_before)

    def _purge_uploads(self, started_before: float) -> int:
        aborted = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < started_before:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _client_error(exc: BotoClientError) -> BadRequest:
    """S3's refusals of a client's parts (unknown upload, bad ETag, part too small) in
    fal's 400 shape; anything else is ours and propagates."""
    code = _error_code(exc)
    if code in {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "InvalidArgument"}:
        return BadRequest(f"Upload refused by storage: {code}")
    raise exc


def _error_code(exc: BotoClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
