//! Thumbnails over HTTP (`/_matrix/client/v1/media/thumbnail/...` and the legacy
//! `/_matrix/media/v3/thumbnail/...`): each image format, crop and scale, animation, EXIF,
//! decompression bombs and types never thumbnailed, quarantine, authentication, pre-generated
//! (`thumbnail_sizes`) and on-demand (`dynamic_thumbnails`) thumbnails, their deletion, and
//! their mirror in an S3 storage provider.

use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{AnimationDecoder, DynamicImage, Frame, ImageFormat, RgbImage, RgbaImage};
use myelin_service::media::{MediaId, local_thumbnail_dir};
use myelin_test_support::moto::MotoServer;
use myelin_test_support::{TestServer, TestUser, http_client};
use ruma::UserId;
use serde_json::{Value, json};

use crate::media::Reply;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const THUMBNAIL: &str = "/_matrix/client/v1/media/thumbnail";
const LEGACY_THUMBNAIL: &str = "/_matrix/media/v3/thumbnail";

impl Reply {
    /// A thumbnail answer: 200, the safe-serving headers, a body of the announced type.
    #[track_caller]
    fn expect_image(&self, content_type: &str) -> DynamicImage {
        assert_eq!(self.status, 200, "{}", self.json());
        assert_eq!(self.header("content-type"), content_type);
        assert!(self.header("content-disposition").starts_with("inline"), "{:?}", self.headers);
        assert!(self.header("content-security-policy").starts_with("sandbox;"));
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        assert_eq!(self.header("cross-origin-resource-policy"), "cross-origin");
        assert_eq!(self.header("content-length"), self.body.len().to_string());
        let format = image::guess_format(&self.body).expect("an image");
        assert_eq!(format.to_mime_type(), content_type);
        image::load_from_memory(&self.body).expect("a decodable thumbnail")
    }
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let mut request = http_client().get(format!("{}{path}", server.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::of(request).await
}

/// Uploads and returns the media ID.
async fn upload(server: &TestServer, user: &TestUser, content_type: &str, bytes: Vec<u8>) -> String {
    let response = http_client()
        .post(format!("{}{UPLOAD}", server.base_url))
        .bearer_auth(&user.access_token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("request reaches the server");
    let status = response.status().as_u16();
    let json: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{json}");
    let uri = json["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix(&format!("mxc://{}/", server.server_name)).expect("a local mxc").to_owned()
}

async fn thumbnail(server: &TestServer, user: &TestUser, media_id: &str, query: &str) -> Reply {
    let path = format!("{THUMBNAIL}/{}/{media_id}?{query}", server.server_name);
    get(server, &path, Some(&user.access_token)).await
}

/// A smooth picture (so that JPEG behaves as with a photo).
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, ((x + y) % 256) as u8])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    match format {
        ImageFormat::Jpeg => {
            JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(image).unwrap();
        }
        ImageFormat::WebP => {
            let rgba = image.to_rgba8();
            WebPEncoder::new_lossless(&mut bytes)
                .encode(rgba.as_raw(), rgba.width(), rgba.height(), image::ExtendedColorType::Rgba8)
                .unwrap();
        }
        other => image.write_to(&mut Cursor::new(&mut bytes), other).unwrap(),
    }
    bytes
}

/// An animated GIF of `frames` solid frames of `width` x `height`.
fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for index in 0..frames {
            let colour = image::Rgba([index.wrapping_mul(80), 255 - index.wrapping_mul(80), 0, 255]);
            encoder.encode_frame(Frame::new(RgbaImage::from_pixel(width, height, colour))).unwrap();
        }
    }
    bytes
}

fn gif_frames(bytes: &[u8]) -> usize {
    image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap().into_frames().count()
}

/// A JPEG stored `width` x `height` whose EXIF block says "rotate 90 degrees clockwise"
/// (orientation 6) and names a camera.
fn jpeg_with_exif(width: u32, height: u32) -> Vec<u8> {
    let jpeg = encode(&DynamicImage::ImageRgb8(picture(width, height)), ImageFormat::Jpeg);
    // TIFF, little-endian: two IFD entries (Orientation = 6, Make = "SECRETCAM"), no next IFD.
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II\x2a\x00");
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation, SHORT, 1
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&6u16.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    let make = b"SECRETCAM\0";
    tiff.extend_from_slice(&0x010fu16.to_le_bytes()); // Make, ASCII
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&(make.len() as u32).to_le_bytes());
    tiff.extend_from_slice(&(8u32 + 2 + 2 * 12 + 4).to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(make);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut bytes = jpeg[..2].to_vec(); // SOI
    bytes.extend_from_slice(&[0xff, 0xe1]);
    bytes.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    bytes.extend_from_slice(&app1);
    bytes.extend_from_slice(&jpeg[2..]);
    bytes
}

/// A PNG whose header claims `width` x `height` pixels, with a few bytes of image data.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = 0xffff_ffffu32;
        for &byte in kind.iter().chain(data) {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        out.extend_from_slice(&(!crc).to_be_bytes());
        out
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(chunk(b"IHDR", &ihdr));
    bytes.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    bytes.extend(chunk(b"IEND", &[]));
    bytes
}

fn thumbnail_files(server: &TestServer, media_id: &str) -> Vec<String> {
    let dir = server
        .services()
        .config
        .media
        .media_store_path
        .join(local_thumbnail_dir(&MediaId::parse(media_id).unwrap()));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn each_format_is_thumbnailed_within_the_requested_box() {
    let server = TestServer::start_with(json!({"dynamic_thumbnails": true})).await;
    let alice = server.register("alice").await;
    let photo = DynamicImage::ImageRgb8(picture(640, 480));
    let cases = [
        ("image/png", encode(&photo, ImageFormat::Png), "image/png"),
        ("image/jpeg", encode(&photo, ImageFormat::Jpeg), "image/jpeg"),
        ("image/webp", encode(&photo, ImageFormat::WebP), "image/jpeg"),
        ("image/gif", animated_gif(640, 480, 3), "image/png"),
    ];
    for (content_type, bytes, thumbnail_type) in cases {
        let media_id = upload(&server, &alice, content_type, bytes).await;
        for (width, height) in [(100, 100), (200, 50), (64, 300)] {
            let reply =
                thumbnail(&server, &alice, &media_id, &format!("width={width}&height={height}&method=scale"))
                    .await;
            let image = reply.expect_image(thumbnail_type);
            let (w, h) = (image.width(), image.height());
            assert!(w <= width && h <= height, "{content_type}: {w}x{h} in {width}x{height}");
            // Scaled to fit: one side fills the box, and the aspect ratio is kept.
            assert!(w == width || h == height, "{content_type}: {w}x{h} in {width}x{height}");
            assert!((f64::from(w) / f64::from(h) - 4.0 / 3.0).abs() < 0.1, "{content_type}: {w}x{h}");
        }
        // Crop: exactly the box.
        let reply = thumbnail(&server, &alice, &media_id, "width=64&height=48&method=crop").await;
        let image = reply.expect_image(thumbnail_type);
        assert_eq!((image.width(), image.height()), (64, 48), "{content_type}");
        let reply = thumbnail(&server, &alice, &media_id, "width=50&height=90&method=crop").await;
        let image = reply.expect_image(thumbnail_type);
        assert_eq!((image.width(), image.height()), (50, 90), "{content_type}");
    }
    server.stop().await;
}

#[tokio::test]
async fn animated_gifs_stay_animated_when_asked() {
    for dynamic in [true, false] {
        let server = TestServer::start_with(json!({"dynamic_thumbnails": dynamic})).await;
        let alice = server.register("alice").await;
        let media_id = upload(&server, &alice, "image/gif", animated_gif(200, 150, 3)).await;

        let reply =
            thumbnail(&server, &alice, &media_id, "width=96&height=96&method=crop&animated=true").await;
        let image = reply.expect_image("image/gif");
        assert!(image.width() <= 96 && image.height() <= 96, "{}x{}", image.width(), image.height());
        assert_eq!(gif_frames(&reply.body), 3, "dynamic: {dynamic}");

        let reply =
            thumbnail(&server, &alice, &media_id, "width=96&height=96&method=crop&animated=false").await;
        reply.expect_image("image/png");
        let reply = thumbnail(&server, &alice, &media_id, "width=96&height=96&method=crop").await;
        reply.expect_image("image/png");

        // A still image asked for an animation gives its still thumbnail, made once.
        let still = upload(
            &server,
            &alice,
            "image/png",
            encode(&DynamicImage::ImageRgb8(picture(200, 150)), ImageFormat::Png),
        )
        .await;
        let reply = thumbnail(&server, &alice, &still, "width=96&height=96&method=crop&animated=true").await;
        reply.expect_image("image/png");
        let made = server.services().thumbnails_generated();
        let reply = thumbnail(&server, &alice, &still, "width=96&height=96&method=crop&animated=true").await;
        reply.expect_image("image/png");
        assert_eq!(server.services().thumbnails_generated(), made, "dynamic: {dynamic}");
        server.stop().await;
    }
}

#[tokio::test]
async fn jpeg_thumbnails_are_oriented_and_carry_no_exif() {
    let server = TestServer::start_with(json!({"dynamic_thumbnails": true})).await;
    let alice = server.register("alice").await;
    let source = jpeg_with_exif(400, 200);
    assert!(source.windows(9).any(|w| w == b"SECRETCAM"));
    let media_id = upload(&server, &alice, "image/jpeg", source).await;

    // Displayed 200x400 (rotated), so a 100x100 box holds 50x100.
    let reply = thumbnail(&server, &alice, &media_id, "width=100&height=100&method=scale").await;
    let image = reply.expect_image("image/jpeg");
    assert_eq!((image.width(), image.height()), (50, 100));
    assert!(!reply.body.windows(4).any(|w| w == b"Exif"), "an EXIF block is left");
    assert!(!reply.body.windows(9).any(|w| w == b"SECRETCAM"), "the camera is left");
    // Pre-generated thumbnails too.
    let reply = thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop").await;
    reply.expect_image("image/jpeg");
    assert!(!reply.body.windows(4).any(|w| w == b"Exif"));
    server.stop().await;
}

#[tokio::test]
async fn images_thumbnails_are_not_made_of_are_refused() {
    for dynamic in [true, false] {
        let server = TestServer::start_with(json!({"dynamic_thumbnails": dynamic})).await;
        let alice = server.register("alice").await;
        let made = server.services().thumbnails_generated();

        // A PNG claiming 100k x 100k pixels: uploaded, never decoded, no thumbnail.
        let started = std::time::Instant::now();
        let bomb = upload(&server, &alice, "image/png", png_claiming(100_000, 100_000)).await;
        thumbnail(&server, &alice, &bomb, "width=32&height=32&method=crop")
            .await
            .expect_error(400, "M_UNKNOWN");
        thumbnail(&server, &alice, &bomb, "width=800&height=600").await.expect_error(400, "M_UNKNOWN");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(thumbnail_files(&server, &bomb).is_empty());

        // SVG (it can carry script), HTML, plain text: never thumbnailed.
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>"#;
        for (content_type, bytes) in [
            ("image/svg+xml", svg.to_vec()),
            ("text/html", b"<html><script>alert(1)</script></html>".to_vec()),
            ("text/plain", b"hello".to_vec()),
        ] {
            let media_id = upload(&server, &alice, content_type, bytes).await;
            thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop")
                .await
                .expect_error(400, "M_UNKNOWN");
        }
        // Bytes that are not the image their type says.
        let liar = upload(&server, &alice, "image/png", b"not a png at all".to_vec()).await;
        thumbnail(&server, &alice, &liar, "width=32&height=32").await.expect_error(400, "M_UNKNOWN");
        assert_eq!(server.services().thumbnails_generated(), made, "dynamic: {dynamic}");

        // Unknown media is not found.
        thumbnail(&server, &alice, "NoSuchMedia", "width=32&height=32")
            .await
            .expect_error(404, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_parameters_and_missing_tokens_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(100, 80)), ImageFormat::Png),
    )
    .await;
    thumbnail(&server, &alice, &media_id, "height=32").await.expect_error(400, "M_MISSING_PARAM");
    thumbnail(&server, &alice, &media_id, "width=32").await.expect_error(400, "M_MISSING_PARAM");
    for query in [
        "width=abc&height=32",
        "width=32&height=-1",
        "width=0&height=32",
        "width=32&height=99999999999",
        "width=32&height=32&method=zoom",
        "width=32&height=32&animated=maybe",
        "width=32&height=32&timeout_ms=soon",
    ] {
        thumbnail(&server, &alice, &media_id, query).await.expect_error(400, "M_INVALID_PARAM");
    }
    thumbnail(&server, &alice, "..%2F..%2Fetc", "width=32&height=32")
        .await
        .expect_error(400, "M_INVALID_PARAM");
    // `CROP` is `crop`, as Synapse lower-cases it.
    thumbnail(&server, &alice, &media_id, "width=32&height=32&method=CROP").await.expect_image("image/png");

    // No token on the authenticated route; the legacy route does not serve authenticated media.
    let path = format!("{THUMBNAIL}/{}/{media_id}?width=32&height=32", server.server_name);
    get(&server, &path, None).await.expect_error(401, "M_MISSING_TOKEN");
    let legacy = format!("{LEGACY_THUMBNAIL}/{}/{media_id}?width=32&height=32", server.server_name);
    get(&server, &legacy, None).await.expect_error(404, "M_NOT_FOUND");
    // Unknown media; remote media of a server that cannot be reached is a bad gateway, as in
    // Synapse (fetching is `federation_media`'s).
    thumbnail(&server, &alice, "abc", "width=32&height=32").await.expect_error(404, "M_NOT_FOUND");
    let remote = format!("{THUMBNAIL}/elsewhere.example/{media_id}?width=32&height=32");
    get(&server, &remote, Some(&alice.access_token)).await.expect_error(502, "M_UNKNOWN");
    server.stop().await;
}

#[tokio::test]
async fn legacy_thumbnails_serve_media_from_before_authenticated_media() {
    let server = TestServer::start_with(json!({"enable_authenticated_media": false})).await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(100, 80)), ImageFormat::Png),
    )
    .await;
    let legacy =
        format!("{LEGACY_THUMBNAIL}/{}/{media_id}?width=32&height=32&method=crop", server.server_name);
    let image = get(&server, &legacy, None).await.expect_image("image/png");
    assert_eq!((image.width(), image.height()), (32, 32));
    server.stop().await;
}

#[tokio::test]
async fn quarantined_media_has_no_thumbnails() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let admin = UserId::parse(format!("@admin:{}", server.server_name)).unwrap();
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(100, 80)), ImageFormat::Png),
    )
    .await;
    thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop").await.expect_image("image/png");
    let services = server.services();
    services.quarantine_local_media(&MediaId::parse(&media_id).unwrap(), &admin).await.unwrap();
    thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop")
        .await
        .expect_error(404, "M_NOT_FOUND");
    services.unquarantine_local_media(&MediaId::parse(&media_id).unwrap()).await.unwrap();
    thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop").await.expect_image("image/png");
    server.stop().await;
}

#[tokio::test]
async fn pregenerated_thumbnails_are_chosen_as_synapse_chooses() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/jpeg",
        encode(&DynamicImage::ImageRgb8(picture(1000, 750)), ImageFormat::Jpeg),
    )
    .await;
    // Synapse's default sizes, stored in its layout under their real sizes.
    assert_eq!(
        thumbnail_files(&server, &media_id),
        [
            "32-32-image-jpeg-crop",
            "320-240-image-jpeg-scale",
            "640-480-image-jpeg-scale",
            "800-600-image-jpeg-scale",
            "96-96-image-jpeg-crop",
        ]
    );
    let made = server.services().thumbnails_generated();
    // (request, the pre-generated size served)
    for (query, expected) in [
        ("width=50&height=50&method=scale", (320, 240)),
        ("width=321&height=241&method=scale", (640, 480)),
        ("width=2000&height=2000&method=scale", (800, 600)),
        ("width=16&height=16&method=crop", (32, 32)),
        ("width=64&height=64&method=crop", (96, 96)),
        ("width=50&height=50", (320, 240)),
    ] {
        let image = thumbnail(&server, &alice, &media_id, query).await.expect_image("image/jpeg");
        assert_eq!((image.width(), image.height()), expected, "{query}");
    }
    // Nothing is made on demand.
    assert_eq!(server.services().thumbnails_generated(), made);
    assert_eq!(thumbnail_files(&server, &media_id).len(), 5);

    // A thumbnail file gone from the store is made again.
    let dir = server
        .services()
        .config
        .media
        .media_store_path
        .join(local_thumbnail_dir(&MediaId::parse(&media_id).unwrap()));
    std::fs::remove_file(dir.join("96-96-image-jpeg-crop")).unwrap();
    let image = thumbnail(&server, &alice, &media_id, "width=64&height=64&method=crop")
        .await
        .expect_image("image/jpeg");
    assert_eq!((image.width(), image.height()), (96, 96));
    assert!(dir.join("96-96-image-jpeg-crop").exists());
    server.stop().await;

    // Only scales configured: a crop is not found; no sizes at all: nothing to serve.
    let server =
        TestServer::start_with(json!({"thumbnail_sizes": [{"width": 64, "height": 64, "method": "scale"}]}))
            .await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(100, 80)), ImageFormat::Png),
    )
    .await;
    thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop")
        .await
        .expect_error(404, "M_NOT_FOUND");
    let image = thumbnail(&server, &alice, &media_id, "width=32&height=32").await.expect_image("image/png");
    assert_eq!((image.width(), image.height()), (64, 51));
    server.stop().await;

    let server = TestServer::start_with(json!({"thumbnail_sizes": []})).await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(100, 80)), ImageFormat::Png),
    )
    .await;
    thumbnail(&server, &alice, &media_id, "width=32&height=32").await.expect_error(400, "M_UNKNOWN");
    server.stop().await;
}

#[tokio::test]
async fn dynamic_thumbnails_are_made_once_at_the_exact_size() {
    let server = TestServer::start_with(json!({"dynamic_thumbnails": true, "thumbnail_sizes": []})).await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(400, 300)), ImageFormat::Png),
    )
    .await;
    assert!(thumbnail_files(&server, &media_id).is_empty());
    let services = server.services();
    let made = services.thumbnails_generated();

    // Eight requests at once for one size: one thumbnail made.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = format!(
            "{}{THUMBNAIL}/{}/{media_id}?width=77&height=55&method=scale",
            server.base_url, server.server_name
        );
        let token = alice.access_token.clone();
        requests.spawn(async move {
            let response =
                http_client().get(url).bearer_auth(token).send().await.expect("request reaches the server");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            Reply { status, headers, body: response.bytes().await.expect("body").to_vec() }
        });
    }
    let replies = requests.join_all().await;
    for reply in &replies {
        let image = reply.expect_image("image/png");
        assert_eq!((image.width(), image.height()), (73, 55));
        assert_eq!(reply.body, replies[0].body);
    }
    assert_eq!(services.thumbnails_generated(), made + 1);
    assert_eq!(thumbnail_files(&server, &media_id), ["77-55-image-png-scale"]);

    // Asked again: served from the store.
    thumbnail(&server, &alice, &media_id, "width=77&height=55&method=scale").await.expect_image("image/png");
    assert_eq!(services.thumbnails_generated(), made + 1);
    // Another size is another thumbnail.
    let image = thumbnail(&server, &alice, &media_id, "width=30&height=30&method=crop")
        .await
        .expect_image("image/png");
    assert_eq!((image.width(), image.height()), (30, 30));
    assert_eq!(services.thumbnails_generated(), made + 2);

    // Deleted with their media.
    assert_eq!(
        services.delete_local_media(std::slice::from_ref(&media_id)).await.unwrap(),
        std::slice::from_ref(&media_id)
    );
    assert!(thumbnail_files(&server, &media_id).is_empty());
    assert!(services.store().local_thumbnails(&media_id).await.unwrap().is_empty());
    thumbnail(&server, &alice, &media_id, "width=77&height=55").await.expect_error(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn thumbnails_are_mirrored_to_s3_and_deleted_from_it() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket("media").await;
    let server = TestServer::start_with(json!({
        "dynamic_thumbnails": true,
        "thumbnail_sizes": [{"width": 32, "height": 32, "method": "crop"}],
        "media_storage_providers": moto.provider_config("media", json!({"prefix": "hs/"})),
    }))
    .await;
    let alice = server.register("alice").await;
    let media_id = upload(
        &server,
        &alice,
        "image/png",
        encode(&DynamicImage::ImageRgb8(picture(200, 100)), ImageFormat::Png),
    )
    .await;
    let dir = format!("hs/local_thumbnails/{}/{}/{}", &media_id[0..2], &media_id[2..4], &media_id[4..]);
    let keys = moto.list_keys("media").await;
    assert!(keys.contains(&format!("{dir}/32-32-image-png-crop")), "{keys:?}");
    // An on-demand thumbnail too, before its answer.
    thumbnail(&server, &alice, &media_id, "width=50&height=50&method=scale").await.expect_image("image/png");
    let keys = moto.list_keys("media").await;
    assert!(keys.contains(&format!("{dir}/50-50-image-png-scale")), "{keys:?}");

    // Gone locally: served from the bucket.
    let local = server.services().config.media.media_store_path.join(&dir["hs/".len()..]);
    std::fs::remove_dir_all(&local).unwrap();
    let image = thumbnail(&server, &alice, &media_id, "width=32&height=32&method=crop")
        .await
        .expect_image("image/png");
    assert_eq!((image.width(), image.height()), (32, 32));
    assert!(local.join("32-32-image-png-crop").exists());

    // Deleting the media deletes its objects.
    server.services().delete_local_media(std::slice::from_ref(&media_id)).await.unwrap();
    let keys = moto.list_keys("media").await;
    assert!(!keys.iter().any(|key| key.contains(&media_id[4..])), "{keys:?}");
    server.stop().await;
}

#[tokio::test]
async fn files_larger_than_any_image_within_max_image_pixels_are_not_read() {
    // 1000 pixels: a source file past 4 kB + 16 MiB is not read into memory to be thumbnailed.
    for dynamic in [true, false] {
        let server =
            TestServer::start_with(json!({"dynamic_thumbnails": dynamic, "max_image_pixels": 1000})).await;
        let alice = server.register("alice").await;
        let small = encode(&DynamicImage::ImageRgb8(picture(20, 20)), ImageFormat::Png);
        let fine = upload(&server, &alice, "image/png", small.clone()).await;
        thumbnail(&server, &alice, &fine, "width=10&height=10&method=crop").await.expect_image("image/png");
        // The same PNG followed by 17 MiB the decoder would never look at.
        let padded = [small, vec![0u8; 17 * 1024 * 1024]].concat();
        let padded = upload(&server, &alice, "image/png", padded).await;
        assert!(thumbnail_files(&server, &padded).is_empty());
        thumbnail(&server, &alice, &padded, "width=10&height=10&method=crop")
            .await
            .expect_error(400, "M_UNKNOWN");
        server.stop().await;
    }
}
