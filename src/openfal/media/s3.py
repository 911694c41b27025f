"""Media in an S3-compatible bucket (AWS S3, MinIO, R2, moto in tests), via boto3.

URLs are ``{s3_public_url}/{key}`` when the bucket is public behind a CDN, else
presigned GET URLs valid for ``s3_presign_seconds`` (at most 7 days, S3's limit).
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from openfal.backends.base import MediaBlob
from openfal.config import Settings
from openfal.errors import ConfigError


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

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self.prefix + key)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)
