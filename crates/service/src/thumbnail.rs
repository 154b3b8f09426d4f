//! Image thumbnails: reading an image's header, generating a thumbnail of it, choosing which
//! pre-generated thumbnail serves a request. Pure functions over bytes: no storage, no HTTP.
//!
//! # Blocking
//!
//! Everything here is synchronous CPU work (tens of milliseconds for a 12-megapixel photo, more
//! for a long animation). Callers on the async runtime run [`generate`] and [`pregenerate`] in
//! `tokio::task::spawn_blocking`; [`probe`] reads headers only and is cheap, but parses
//! untrusted bytes all the same, so it belongs there too when the image is large.
//!
//! # Layout
//!
//! - [`probe`]: format, displayed size (EXIF orientation applied) and whether the image is
//!   animated, from its headers alone.
//! - [`generate`]: one thumbnail. The size the header claims is checked against `max_pixels`
//!   before any pixel is decoded, and the decoders run with memory limits derived from it.
//!   JPEGs much larger than the thumbnail are decoded DCT-scaled (1/2, 1/4 or 1/8 of their
//!   size, as Pillow's draft mode does), the rest decoded whole; resizing is Lanczos3 (as
//!   Synapse's `Image.LANCZOS`) through `fast_image_resize`.
//! - [`pregenerate`]: the configured `thumbnail_sizes` at upload time.
//! - [`select_thumbnail`]: Synapse's `_select_thumbnail`.
//!
//! # Semantics, and where they differ from Synapse
//!
//! - `scale` fits the image within the box keeping its aspect ratio (Synapse's `aspect`), and
//!   never upscales: a box larger than the image gives the image's own size.
//! - `crop` fills the box exactly, cropping the centre of the image. Synapse upscales an image
//!   smaller than the box; the Matrix spec says servers must not upscale, so here the box is
//!   shrunk, keeping its aspect ratio, until it fits within the image.
//! - Output type as Synapse's `thumbnail_sizes` requirements pick it: JPEG for JPEG and WebP
//!   sources, PNG for PNG and GIF sources, PNG instead of JPEG when the image really uses
//!   transparency. (Synapse's dynamic thumbnails are always PNG; a photo is served as JPEG here.)
//! - An animated source (GIF, animated WebP, APNG) asked for with `animated = true` gives an
//!   animated GIF (Synapse now writes animated WebP, which the `image` crate cannot encode),
//!   of at most [`MAX_ANIMATED_FRAMES`] frames and [`ANIMATION_PIXEL_BUDGET`] decoded pixels: a
//!   longer animation is cut there. An animation that fails to decode part-way falls back to a
//!   static thumbnail of its first frame, as Synapse does.
//! - EXIF orientation is applied (Synapse's `transpose`); the output carries no metadata at all
//!   (no EXIF, no GPS, no ICC profile, no text chunks): the encoders are given pixels only.

use std::fmt;
use std::io::Cursor;

use fast_image_resize::images::Image as ResizeImage;
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngDecoder, PngEncoder};
use image::codecs::webp::WebPDecoder;
use image::metadata::{LoopCount, Orientation};
use image::{
    AnimationDecoder, DynamicImage, ImageDecoder, ImageEncoder, ImageError, Limits, RgbImage, RgbaImage,
};
use myelin_config::{ThumbnailMethod, ThumbnailSize};

/// Synapse's `max_image_pixels` default (32 megapixels).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 32 * 1024 * 1024;

/// At most this many frames of an animation go into an animated thumbnail.
pub const MAX_ANIMATED_FRAMES: usize = 200;

/// At most this many source pixels (frames times canvas) are decoded for one animated
/// thumbnail; a larger animation is cut at the frame that would pass it.
pub const ANIMATION_PIXEL_BUDGET: u64 = 200_000_000;

/// JPEG quality of thumbnails (Synapse's `quality=80`).
const JPEG_QUALITY: u8 = 80;

/// Memory a decoder may allocate beyond the decoded pixels themselves (tables, one row of
/// filtering, compressed chunks).
const DECODER_SLACK_BYTES: u64 = 16 * 1024 * 1024;

/// Speed of the GIF encoder's colour quantisation, from 1 (best) to 30 (fastest).
const GIF_QUANTIZE_SPEED: i32 = 10;

/// Content types thumbnails are made of (Synapse's `THUMBNAIL_SUPPORTED_MEDIA_FORMAT_MAP`).
pub const SUPPORTED_CONTENT_TYPES: [&str; 5] =
    ["image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp"];

/// The image formats decoded here; the decoder of anything else is never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    WebP,
}

impl ImageFormat {
    /// The format's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
            ImageFormat::WebP => "image/webp",
        }
    }

    /// The format of `bytes`, from their magic number.
    fn sniff(bytes: &[u8]) -> Option<Self> {
        match image::guess_format(bytes).ok()? {
            image::ImageFormat::Png => Some(ImageFormat::Png),
            image::ImageFormat::Jpeg => Some(ImageFormat::Jpeg),
            image::ImageFormat::Gif => Some(ImageFormat::Gif),
            image::ImageFormat::WebP => Some(ImageFormat::WebP),
            _ => None,
        }
    }
}

/// What an image's headers say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    /// Width as displayed, that is after the EXIF orientation is applied.
    pub width: u32,
    /// Height as displayed.
    pub height: u32,
    /// More than one frame (GIF, WebP) or an APNG animation.
    pub animated: bool,
}

/// An encoded thumbnail.
#[derive(Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png`, or `image/gif` for an animated thumbnail.
    pub content_type: &'static str,
    /// The thumbnail's real size, which is what is stored and what selection compares.
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub animated: bool,
}

impl fmt::Debug for Thumbnail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thumbnail")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("method", &self.method)
            .field("animated", &self.animated)
            .finish()
    }
}

/// Why no thumbnail was made. Synapse answers all of these `400 M_UNKNOWN` ("Failed to
/// generate thumbnail.") when thumbnailing on demand; with pre-generated thumbnails only, a
/// medium without any is `400 M_UNKNOWN` and one without a thumbnail of the requested method
/// (`select_thumbnail` gives `None`) is `404 M_NOT_FOUND`.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not a PNG, JPEG, GIF or WebP (SVG, PDF, anything else), by content type or content.
    #[error("thumbnails are not made of {0}")]
    Unsupported(String),
    /// The header claims more than `max_image_pixels`; nothing was decoded.
    #[error("image of {width}x{height} pixels is larger than the {max_pixels} pixels thumbnailed")]
    TooLarge { width: u32, height: u32, max_pixels: u64 },
    /// A zero width or height was asked for.
    #[error("thumbnail width and height must be positive")]
    InvalidSize,
    /// The image is truncated, corrupt or breaks a decoder limit.
    #[error("image could not be decoded: {0}")]
    Decode(String),
    /// Encoding the thumbnail failed (not the client's fault).
    #[error("thumbnail could not be encoded: {0}")]
    Encode(String),
}

fn decode_error(error: impl fmt::Display) -> ThumbnailError {
    ThumbnailError::Decode(error.to_string())
}

fn encode_error(error: impl fmt::Display) -> ThumbnailError {
    ThumbnailError::Encode(error.to_string())
}

/// Whether thumbnails are made of media of this content type (parameters such as
/// `; charset=` are ignored, case does not matter).
pub fn is_supported_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    SUPPORTED_CONTENT_TYPES.iter().any(|supported| supported.eq_ignore_ascii_case(essence))
}

/// An image's format, displayed size and animation, from its headers only: no pixel is
/// decoded, so this is safe on an image of any claimed size.
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ThumbnailError> {
    Ok(read_header(bytes)?.info())
}

/// One thumbnail of `bytes`, uploaded as `content_type`, fitted to `spec`. With `animated`, an
/// animated source gives an animated GIF; otherwise (or for a still source) the thumbnail is of
/// the first frame. Images whose header claims more than `max_pixels` are refused before
/// decoding.
pub fn generate(
    bytes: &[u8],
    content_type: &str,
    spec: ThumbnailSize,
    animated: bool,
    max_pixels: u64,
) -> Result<Thumbnail, ThumbnailError> {
    if spec.width == 0 || spec.height == 0 {
        return Err(ThumbnailError::InvalidSize);
    }
    let header = checked_header(bytes, content_type, max_pixels)?;
    let source = Source::new(bytes, header, max_pixels);
    if animated
        && header.animated
        && let Some(thumbnail) = source.animated_thumbnail(spec)
    {
        return Ok(thumbnail);
    }
    source.still_thumbnail(spec, None)
}

/// The thumbnails of `configured` sizes made at upload time, as Synapse's
/// `_generate_thumbnails`: sizes that come out the same (a box larger than the image gives the
/// image's own size) are made once per method, and an animated source also gets an animated
/// thumbnail of each size. The image is decoded once for all still thumbnails.
pub fn pregenerate(
    bytes: &[u8],
    content_type: &str,
    configured: &[ThumbnailSize],
    max_pixels: u64,
) -> Result<Vec<Thumbnail>, ThumbnailError> {
    let header = checked_header(bytes, content_type, max_pixels)?;
    let source = Source::new(bytes, header, max_pixels);
    let info = header.info();
    let mut sizes: Vec<(u32, u32, ThumbnailSize)> = Vec::new();
    for spec in configured {
        if spec.width == 0 || spec.height == 0 {
            continue;
        }
        let (width, height) = thumbnail_size(info.width, info.height, *spec);
        if !sizes.iter().any(|(w, h, s)| (*w, *h, s.method) == (width, height, spec.method)) {
            sizes.push((width, height, *spec));
        }
    }
    // One decode, at the scale the most demanding thumbnail needs.
    let Some(target) = sizes
        .iter()
        .map(|(w, h, _)| (*w, *h))
        .max_by(|a, b| needed_scale(&info, *a).total_cmp(&needed_scale(&info, *b)))
    else {
        return Ok(Vec::new());
    };
    let decoded = source.decode_still(target)?;
    let mut thumbnails = Vec::new();
    for (_, _, spec) in &sizes {
        thumbnails.push(source.still_thumbnail(*spec, Some(&decoded))?);
        if header.animated
            && let Some(thumbnail) = source.animated_thumbnail(*spec)
        {
            thumbnails.push(thumbnail);
        }
    }
    Ok(thumbnails)
}

/// The size of the thumbnail that `spec` gives of an image of `width` x `height` (as
/// displayed): what [`generate`] will produce, without decoding anything.
pub fn thumbnail_size(width: u32, height: u32, spec: ThumbnailSize) -> (u32, u32) {
    let (src_w, src_h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let (box_w, box_h) = (u64::from(spec.width.max(1)), u64::from(spec.height.max(1)));
    let (w, h) = match spec.method {
        ThumbnailMethod::Scale => {
            // Synapse's `aspect`: the largest size of the image's aspect ratio in the box.
            let (w, h) = if box_w * src_h < box_h * src_w {
                (box_w, (box_w * src_h / src_w).max(1))
            } else {
                ((box_h * src_w / src_h).max(1), box_h)
            };
            if w >= src_w || h >= src_h { (src_w, src_h) } else { (w, h) }
        }
        ThumbnailMethod::Crop => {
            if box_w <= src_w && box_h <= src_h {
                (box_w, box_h)
            } else if src_w * box_h <= src_h * box_w {
                // The image is narrower than the box: its width bounds the shrunk box.
                (src_w, (src_w * box_h / box_w).max(1))
            } else {
                ((src_h * box_w / box_h).max(1), src_h)
            }
        }
    };
    // Both are at most the image's own width and height, which are u32.
    (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX))
}

/// A stored thumbnail as [`select_thumbnail`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredThumbnail {
    /// Its real size and its method.
    pub size: ThumbnailSize,
    /// Whether it is of the type the request prefers (animated or still).
    pub preferred_type: bool,
    /// Its length in bytes.
    pub length: u64,
}

/// Which of the `stored` thumbnails serves a request for `width` x `height` by `method` (its
/// index), as Synapse's `_select_thumbnail`: only thumbnails of that method; among those at
/// least as large as the request in one dimension (if any, else all), the closest in aspect
/// ratio (crop only), then one at least as large in both dimensions, then the closest in
/// size, then one of the preferred type, then the shortest; ties go to the earlier one.
/// `None` when no thumbnail has that method (Synapse answers `404`).
pub fn select_thumbnail(
    stored: &[StoredThumbnail],
    width: u32,
    height: u32,
    method: ThumbnailMethod,
) -> Option<usize> {
    let (d_w, d_h) = (i128::from(width), i128::from(height));
    // Key per candidate: (aspect quality, min quality, size quality, type quality, length);
    // scale uses zeros for the first two.
    let quality = |thumbnail: &StoredThumbnail| -> (i128, i128, i128, bool, u64) {
        let (t_w, t_h) = (i128::from(thumbnail.size.width), i128::from(thumbnail.size.height));
        let size_quality = ((d_w - t_w) * (d_h - t_h)).abs();
        let type_quality = !thumbnail.preferred_type;
        match method {
            ThumbnailMethod::Crop => {
                let aspect_quality = (d_w * t_h - d_h * t_w).abs();
                let min_quality = if d_w <= t_w && d_h <= t_h { 0 } else { 1 };
                (aspect_quality, min_quality, size_quality, type_quality, thumbnail.length)
            }
            ThumbnailMethod::Scale => (0, 0, size_quality, type_quality, thumbnail.length),
        }
    };
    let candidates = stored.iter().enumerate().filter(|(_, thumbnail)| thumbnail.size.method == method);
    let (large_enough, smaller): (Vec<_>, Vec<_>) = candidates.partition(|(_, thumbnail)| {
        i128::from(thumbnail.size.width) >= d_w || i128::from(thumbnail.size.height) >= d_h
    });
    let pool = if large_enough.is_empty() { smaller } else { large_enough };
    // The index in the key keeps the first of equal candidates.
    pool.into_iter().min_by_key(|(index, thumbnail)| (quality(thumbnail), *index)).map(|(index, _)| index)
}

/// What the headers say, before orientation is applied to the size.
#[derive(Debug, Clone, Copy)]
struct Header {
    format: ImageFormat,
    /// Size as stored.
    stored_width: u32,
    stored_height: u32,
    orientation: Orientation,
    animated: bool,
}

impl Header {
    fn swaps_axes(&self) -> bool {
        matches!(
            self.orientation,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        )
    }

    fn info(&self) -> ImageInfo {
        let (width, height) = if self.swaps_axes() {
            (self.stored_height, self.stored_width)
        } else {
            (self.stored_width, self.stored_height)
        };
        ImageInfo { format: self.format, width, height, animated: self.animated }
    }

    fn pixels(&self) -> u64 {
        u64::from(self.stored_width) * u64::from(self.stored_height)
    }
}

fn read_header(bytes: &[u8]) -> Result<Header, ThumbnailError> {
    let format = ImageFormat::sniff(bytes)
        .ok_or_else(|| ThumbnailError::Unsupported("content that is not an image".into()))?;
    let cursor = Cursor::new(bytes);
    let (stored_width, stored_height, orientation, animated) = match format {
        ImageFormat::Jpeg => {
            let mut decoder = JpegDecoder::new(cursor).map_err(decode_error)?;
            let (w, h) = decoder.dimensions();
            (w, h, orientation_or_none(&mut decoder), false)
        }
        ImageFormat::Png => {
            let mut decoder = PngDecoder::new(cursor).map_err(decode_error)?;
            let (w, h) = decoder.dimensions();
            let animated = decoder.is_apng().map_err(decode_error)?;
            (w, h, orientation_or_none(&mut decoder), animated)
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(cursor).map_err(decode_error)?;
            let (w, h) = decoder.dimensions();
            let animated = decoder.has_animation();
            (w, h, orientation_or_none(&mut decoder), animated)
        }
        ImageFormat::Gif => {
            // Frame descriptors only: the LZW data is skipped, not decompressed.
            let mut options = gif::DecodeOptions::new();
            options.skip_frame_decoding(true);
            let mut decoder = options.read_info(cursor).map_err(decode_error)?;
            let (w, h) = (u32::from(decoder.width()), u32::from(decoder.height()));
            let mut frames = 0;
            while frames < 2 && decoder.next_frame_info().map_err(decode_error)?.is_some() {
                frames += 1;
            }
            (w, h, Orientation::NoTransforms, frames > 1)
        }
    };
    if stored_width == 0 || stored_height == 0 {
        return Err(ThumbnailError::Decode("image has no pixels".into()));
    }
    Ok(Header { format, stored_width, stored_height, orientation, animated })
}

/// The EXIF orientation; a broken EXIF block counts as none, as Synapse ignores EXIF it cannot
/// parse.
fn orientation_or_none(decoder: &mut impl ImageDecoder) -> Orientation {
    decoder.orientation().unwrap_or(Orientation::NoTransforms)
}

fn checked_header(bytes: &[u8], content_type: &str, max_pixels: u64) -> Result<Header, ThumbnailError> {
    if !is_supported_content_type(content_type) {
        return Err(ThumbnailError::Unsupported(content_type.to_owned()));
    }
    let header = read_header(bytes)?;
    if header.pixels() > max_pixels {
        return Err(ThumbnailError::TooLarge {
            width: header.stored_width,
            height: header.stored_height,
            max_pixels,
        });
    }
    Ok(header)
}

/// An image whose header passed the checks, and the limits its decoders run under.
struct Source<'a> {
    bytes: &'a [u8],
    header: Header,
    limits: Limits,
}

/// Pixels decoded for still thumbnails, oriented as displayed.
enum Decoded {
    Rgb(RgbImage),
    Rgba(RgbaImage),
}

impl Decoded {
    fn from_dynamic(image: DynamicImage) -> Self {
        if image.color().has_alpha() {
            Decoded::Rgba(image.into_rgba8())
        } else {
            Decoded::Rgb(image.into_rgb8())
        }
    }

    /// Whether some pixel is not fully opaque (Synapse's `has_transparency`).
    fn has_transparency(&self) -> bool {
        match self {
            Decoded::Rgb(_) => false,
            Decoded::Rgba(image) => image.pixels().any(|pixel| pixel.0[3] < u8::MAX),
        }
    }
}

impl<'a> Source<'a> {
    fn new(bytes: &'a [u8], header: Header, max_pixels: u64) -> Self {
        let mut limits = Limits::default();
        // A decoder may hold the image at up to 8 bytes a pixel (16-bit RGBA), no more.
        limits.max_alloc =
            Some(header.pixels().min(max_pixels).saturating_mul(8).saturating_add(DECODER_SLACK_BYTES));
        limits.max_image_width = Some(header.stored_width);
        limits.max_image_height = Some(header.stored_height);
        Source { bytes, header, limits }
    }

    fn cursor(&self) -> Cursor<&'a [u8]> {
        Cursor::new(self.bytes)
    }

    /// A still thumbnail, from `decoded` pixels if given (at least as large as this thumbnail
    /// needs) or decoded now.
    fn still_thumbnail(
        &self,
        spec: ThumbnailSize,
        decoded: Option<&Decoded>,
    ) -> Result<Thumbnail, ThumbnailError> {
        let info = self.header.info();
        let (width, height) = thumbnail_size(info.width, info.height, spec);
        let owned;
        let decoded = match decoded {
            Some(decoded) => decoded,
            None => {
                owned = self.decode_still((width, height))?;
                &owned
            }
        };
        let output = match self.header.format {
            ImageFormat::Jpeg => OutputType::Jpeg,
            ImageFormat::WebP if !decoded.has_transparency() => OutputType::Jpeg,
            ImageFormat::WebP | ImageFormat::Png | ImageFormat::Gif => OutputType::Png,
        };
        let bytes = match decoded {
            Decoded::Rgb(image) => {
                let pixels = resize(image.as_raw(), image.dimensions(), PixelType::U8x3, (width, height))?;
                encode_still(&pixels, width, height, image::ExtendedColorType::Rgb8, output)?
            }
            Decoded::Rgba(image) => {
                let pixels = resize(image.as_raw(), image.dimensions(), PixelType::U8x4, (width, height))?;
                if output == OutputType::Jpeg {
                    // Fully opaque: drop the alpha channel JPEG cannot hold.
                    let rgb: Vec<u8> = pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                    encode_still(&rgb, width, height, image::ExtendedColorType::Rgb8, output)?
                } else {
                    encode_still(&pixels, width, height, image::ExtendedColorType::Rgba8, output)?
                }
            }
        };
        Ok(Thumbnail {
            bytes,
            content_type: output.content_type(),
            width,
            height,
            method: spec.method,
            animated: false,
        })
    }

    /// The first frame, oriented as displayed, at least `target` large (as displayed): a JPEG
    /// much larger than that is decoded DCT-scaled.
    fn decode_still(&self, target: (u32, u32)) -> Result<Decoded, ThumbnailError> {
        if self.header.format == ImageFormat::Jpeg
            && let Some(decoded) = self.decode_jpeg_scaled(target)
        {
            return Ok(decoded);
        }
        let mut reader = image::ImageReader::with_format(self.cursor(), to_image_format(self.header.format));
        reader.limits(self.limits.clone());
        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
        image.apply_orientation(orientation);
        Ok(Decoded::from_dynamic(image))
    }

    /// A JPEG decoded at 1/2, 1/4 or 1/8 of its size, the smallest still at least `target`
    /// (as displayed); `None` when that is the full size or this decoder cannot (CMYK,
    /// 12-bit, lossless, corrupt), and the whole image is decoded instead.
    fn decode_jpeg_scaled(&self, target: (u32, u32)) -> Option<Decoded> {
        let info = self.header.info();
        let eighths =
            [1, 2, 4].into_iter().find(|&eighths| f64::from(eighths) / 8.0 >= needed_scale(&info, target))?;
        let (w, h) = (self.header.stored_width, self.header.stored_height);
        let scaled = |len: u32| (len * eighths).div_ceil(8);
        let mut decoder = jpeg_decoder::Decoder::new(self.cursor());
        let limit = usize::try_from(self.limits.max_alloc.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        decoder.set_max_decoding_buffer_size(limit);
        let request_w = u16::try_from(scaled(w)).ok()?;
        let request_h = u16::try_from(scaled(h)).ok()?;
        let (out_w, out_h) = decoder.scale(request_w, request_h).ok()?;
        let pixels = decoder.decode().ok()?;
        let (out_w, out_h) = (u32::from(out_w), u32::from(out_h));
        let area = usize::try_from(out_w * out_h).ok()?;
        let mut image = match pixels.len().checked_div(area)? {
            1 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(out_w, out_h, pixels)?),
            3 => DynamicImage::ImageRgb8(RgbImage::from_raw(out_w, out_h, pixels)?),
            // CMYK and 16-bit samples: the general decoder converts those.
            _ => return None,
        };
        let orientation =
            decoder.exif_data().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
        image.apply_orientation(orientation);
        Some(Decoded::from_dynamic(image))
    }

    /// An animated GIF thumbnail, or `None` when the source turns out to have fewer than two
    /// frames or fails to decode part-way (the caller then makes a still one).
    fn animated_thumbnail(&self, spec: ThumbnailSize) -> Option<Thumbnail> {
        let info = self.header.info();
        let (width, height) = thumbnail_size(info.width, info.height, spec);
        let (frames, loop_count) = match self.animation_decoder() {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::info!(%error, "animation could not be decoded; thumbnail of its first frame");
                return None;
            }
        };
        let frame_cap = usize::try_from(ANIMATION_PIXEL_BUDGET / self.header.pixels().max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_ANIMATED_FRAMES);
        let mut bytes = Vec::new();
        let mut n_frames = 0;
        {
            let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_QUANTIZE_SPEED);
            let repeat = match loop_count {
                LoopCount::Infinite => Repeat::Infinite,
                LoopCount::Finite(n) => Repeat::Finite(u16::try_from(n.get()).unwrap_or(u16::MAX)),
            };
            if let Err(error) = encoder.set_repeat(repeat) {
                tracing::warn!(%error, "animated thumbnail could not be encoded");
                return None;
            }
            for frame in frames.take(frame_cap) {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(error) => {
                        tracing::info!(%error, "animation could not be decoded; thumbnail of its first frame");
                        return None;
                    }
                };
                let delay = frame.delay();
                let mut canvas = DynamicImage::ImageRgba8(frame.into_buffer());
                canvas.apply_orientation(self.header.orientation);
                let canvas = canvas.into_rgba8();
                let pixels =
                    match resize(canvas.as_raw(), canvas.dimensions(), PixelType::U8x4, (width, height)) {
                        Ok(pixels) => pixels,
                        Err(error) => {
                            tracing::warn!(%error, "animated thumbnail could not be resized");
                            return None;
                        }
                    };
                let buffer = RgbaImage::from_raw(width, height, pixels)?;
                if let Err(error) = encoder.encode_frame(image::Frame::from_parts(buffer, 0, 0, delay)) {
                    tracing::warn!(%error, "animated thumbnail could not be encoded");
                    return None;
                }
                n_frames += 1;
            }
        }
        if n_frames < 2 {
            return None;
        }
        Some(Thumbnail {
            bytes,
            content_type: "image/gif",
            width,
            height,
            method: spec.method,
            animated: true,
        })
    }

    /// The composed frames of an animation (full canvas each) and its loop count.
    fn animation_decoder(&self) -> Result<(image::Frames<'a>, LoopCount), ImageError> {
        fn frames<'a>(decoder: impl AnimationDecoder<'a>) -> (image::Frames<'a>, LoopCount) {
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
        Ok(match self.header.format {
            ImageFormat::Gif => {
                let mut decoder = GifDecoder::new(self.cursor())?;
                decoder.set_limits(self.limits.clone())?;
                frames(decoder)
            }
            ImageFormat::WebP => {
                let mut decoder = WebPDecoder::new(self.cursor())?;
                decoder.set_limits(self.limits.clone())?;
                frames(decoder)
            }
            ImageFormat::Png => {
                let decoder = PngDecoder::with_limits(self.cursor(), self.limits.clone())?;
                frames(decoder.apng()?)
            }
            ImageFormat::Jpeg => {
                return Err(ImageError::Unsupported(image::error::UnsupportedError::from_format_and_kind(
                    image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                    image::error::UnsupportedErrorKind::GenericFeature("animation".into()),
                )));
            }
        })
    }
}

/// The fraction of the image's size (as displayed) that a thumbnail of `target` size needs
/// decoded so that resizing it never upscales: for a crop, the part it is cut from is the
/// largest of its aspect ratio in the image, which gives the same ratio as a scale.
fn needed_scale(info: &ImageInfo, target: (u32, u32)) -> f64 {
    let width_ratio = f64::from(target.0) / f64::from(info.width.max(1));
    let height_ratio = f64::from(target.1) / f64::from(info.height.max(1));
    width_ratio.max(height_ratio)
}

fn to_image_format(format: ImageFormat) -> image::ImageFormat {
    match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::WebP => image::ImageFormat::WebP,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputType {
    Jpeg,
    Png,
}

impl OutputType {
    fn content_type(self) -> &'static str {
        match self {
            OutputType::Jpeg => "image/jpeg",
            OutputType::Png => "image/png",
        }
    }
}

/// Resizes `pixels` of `from` size to exactly `to` with Lanczos3, taking the centre of the
/// source when the aspect ratios differ (crop); for a scale they are the same up to rounding.
fn resize(
    pixels: &[u8],
    from: (u32, u32),
    pixel_type: PixelType,
    to: (u32, u32),
) -> Result<Vec<u8>, ThumbnailError> {
    let (src_w, src_h) = (f64::from(from.0), f64::from(from.1));
    let (dst_w, dst_h) = (f64::from(to.0), f64::from(to.1));
    // The largest part of the source with the destination's aspect ratio, centred.
    let (crop_w, crop_h) = if dst_w * src_h > dst_h * src_w {
        (src_w, src_w * dst_h / dst_w)
    } else {
        (src_h * dst_w / dst_h, src_h)
    };
    let options = ResizeOptions::new().crop((src_w - crop_w) / 2.0, (src_h - crop_h) / 2.0, crop_w, crop_h);
    let source =
        fast_image_resize::images::ImageRef::new(from.0, from.1, pixels, pixel_type).map_err(encode_error)?;
    let mut destination = ResizeImage::new(to.0, to.1, pixel_type);
    Resizer::new().resize(&source, &mut destination, &options).map_err(encode_error)?;
    Ok(destination.into_vec())
}

/// Encodes pixels only: the encoders are given no EXIF, ICC profile or text.
fn encode_still(
    pixels: &[u8],
    width: u32,
    height: u32,
    color: image::ExtendedColorType,
    output: OutputType,
) -> Result<Vec<u8>, ThumbnailError> {
    let mut bytes = Vec::new();
    match output {
        OutputType::Jpeg => JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
            .write_image(pixels, width, height, color)
            .map_err(encode_error)?,
        OutputType::Png => {
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, PngFilter::Adaptive)
                .write_image(pixels, width, height, color)
                .map_err(encode_error)?
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use image::codecs::webp::WebPEncoder;
    use image::{Rgb, Rgba};

    use super::ThumbnailMethod::{Crop, Scale};
    use super::*;
    use myelin_config::MediaConfig;

    const RED: Rgb<u8> = Rgb([255, 0, 0]);
    const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
    const BLUE: Rgb<u8> = Rgb([0, 0, 255]);

    fn candidate(width: u32, height: u32, method: ThumbnailMethod) -> StoredThumbnail {
        StoredThumbnail { size: spec(width, height, method), preferred_type: true, length: 100 }
    }

    fn spec(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
        ThumbnailSize::new(width, height, method)
    }

    /// A smooth picture, so that JPEG sizes and timings are those of a photo, not of a flat
    /// colour.
    fn photo(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, ((x + y) % 256) as u8])
        })
    }

    /// Red, green and blue vertical bands.
    fn bands(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, _| match x * 3 / width {
            0 => RED,
            1 => GREEN,
            _ => BLUE,
        })
    }

    fn jpeg(image: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
            .unwrap();
        bytes
    }

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    fn webp(image: &RgbaImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        WebPEncoder::new_lossless(&mut bytes)
            .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgba8)
            .unwrap();
        bytes
    }

    fn gif(frames: &[Rgb<u8>], size: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            encoder.set_repeat(Repeat::Infinite).unwrap();
            for colour in frames {
                let [r, g, b] = colour.0;
                let buffer = RgbaImage::from_pixel(size, size, Rgba([r, g, b, 255]));
                let delay = image::Delay::from_numer_denom_ms(100, 1);
                encoder.encode_frame(image::Frame::from_parts(buffer, 0, 0, delay)).unwrap();
            }
        }
        bytes
    }

    /// `jpeg` with an EXIF APP1 segment after SOI holding the orientation tag and a GPS IFD
    /// pointer (big-endian TIFF, built by hand).
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08");
        tiff.extend_from_slice(&2u16.to_be_bytes()); // two entries
        // Orientation (0x0112), SHORT, count 1, value in the first two bytes.
        tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        // GPSInfo (0x8825), LONG, count 1: offset of the GPS IFD right after this one.
        tiff.extend_from_slice(&[0x88, 0x25, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 38]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        // GPS IFD: GPSLatitudeRef (1) = "N".
        tiff.extend_from_slice(&1u16.to_be_bytes());
        tiff.extend_from_slice(&[0x00, 0x01, 0x00, 0x02, 0, 0, 0, 2, b'N', 0, 0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes());
        let mut segment = b"Exif\x00\x00".to_vec();
        segment.extend_from_slice(&tiff);
        let length = u16::try_from(segment.len() + 2).unwrap();
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&segment);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// A PNG signature and IHDR claiming `width` x `height` RGB pixels, then an IDAT of
    /// nothing and IEND: the header of a decompression bomb.
    fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.finalize().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, adaptive, no interlace
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn decode(thumbnail: &Thumbnail) -> RgbaImage {
        image::load_from_memory(&thumbnail.bytes).unwrap().into_rgba8()
    }

    fn assert_close(pixel: Rgba<u8>, expected: Rgb<u8>) {
        let close = pixel.0[..3].iter().zip(expected.0).all(|(got, want)| got.abs_diff(want) < 60);
        assert!(close, "pixel {pixel:?} is not close to {expected:?}");
    }

    fn generate_ok(bytes: &[u8], content_type: &str, spec: ThumbnailSize) -> Thumbnail {
        let thumbnail = generate(bytes, content_type, spec, false, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        let decoded = decode(&thumbnail);
        assert_eq!(
            decoded.dimensions(),
            (thumbnail.width, thumbnail.height),
            "reported size is the real one"
        );
        assert!(!thumbnail.animated);
        thumbnail
    }

    #[test]
    fn scale_fits_the_box_keeping_aspect_and_never_upscales() {
        // (source, box, expected)
        let cases = [
            ((400, 300), (320, 240), (320, 240)), // landscape, same aspect
            ((300, 400), (320, 240), (180, 240)), // portrait: height bounds
            ((1000, 100), (320, 240), (320, 32)), // panorama: width bounds
            ((50, 40), (320, 240), (50, 40)),     // smaller than the box: as is
            ((330, 100), (320, 240), (320, 96)),  // wider than the box only
            ((100, 2000), (32, 32), (1, 32)),     // never below one pixel
        ];
        for ((w, h), (bw, bh), expected) in cases {
            let source = png(&DynamicImage::ImageRgb8(photo(w, h)));
            let thumbnail = generate_ok(&source, "image/png", spec(bw, bh, Scale));
            assert_eq!((thumbnail.width, thumbnail.height), expected, "{w}x{h} in {bw}x{bh}");
            assert_eq!(thumbnail_size(w, h, spec(bw, bh, Scale)), expected);
            assert!(thumbnail.width <= bw && thumbnail.height <= bh);
        }
    }

    #[test]
    fn crop_fills_the_box_from_the_centre_and_never_upscales() {
        let cases = [
            ((400, 300), (96, 96), (96, 96)),
            ((300, 400), (96, 96), (96, 96)),
            ((300, 400), (320, 240), (300, 225)), // taller than the box is wide: shrunk box
            ((50, 40), (96, 96), (40, 40)),       // smaller: the box shrunk to fit, square kept
            ((1000, 100), (320, 240), (133, 100)),
            ((32, 32), (32, 32), (32, 32)),
        ];
        for ((w, h), (bw, bh), expected) in cases {
            let source = png(&DynamicImage::ImageRgb8(photo(w, h)));
            let thumbnail = generate_ok(&source, "image/png", spec(bw, bh, Crop));
            assert_eq!((thumbnail.width, thumbnail.height), expected, "{w}x{h} in {bw}x{bh}");
            assert!(thumbnail.width <= w && thumbnail.height <= h, "not upscaled");
        }
        // The centre band of a landscape image fills a square crop.
        let source = png(&DynamicImage::ImageRgb8(bands(300, 100)));
        let thumbnail = generate_ok(&source, "image/png", spec(30, 30, Crop));
        let decoded = decode(&thumbnail);
        for (x, y) in [(0, 0), (29, 0), (15, 15), (0, 29), (29, 29)] {
            assert_close(*decoded.get_pixel(x, y), GREEN);
        }
        // A scale of the same keeps all three bands.
        let thumbnail = generate_ok(&source, "image/png", spec(30, 30, Scale));
        let decoded = decode(&thumbnail);
        assert_eq!(decoded.dimensions(), (30, 10));
        assert_close(*decoded.get_pixel(0, 5), RED);
        assert_close(*decoded.get_pixel(29, 5), BLUE);
    }

    #[test]
    fn output_types_follow_synapse() {
        let rgb = photo(64, 48);
        let jpeg_out = generate_ok(&jpeg(&rgb), "image/jpeg", spec(32, 32, Scale));
        assert_eq!(jpeg_out.content_type, "image/jpeg");
        assert_eq!(ImageFormat::sniff(&jpeg_out.bytes), Some(ImageFormat::Jpeg));

        let png_out =
            generate_ok(&png(&DynamicImage::ImageRgb8(rgb.clone())), "image/png", spec(32, 32, Scale));
        assert_eq!(png_out.content_type, "image/png");
        assert_eq!(ImageFormat::sniff(&png_out.bytes), Some(ImageFormat::Png));

        let gif_out = generate_ok(&gif(&[RED], 40), "image/gif", spec(32, 32, Scale));
        assert_eq!(gif_out.content_type, "image/png");

        // WebP: JPEG when opaque, PNG when it uses transparency.
        let opaque = DynamicImage::ImageRgb8(rgb.clone()).into_rgba8();
        let webp_out = generate_ok(&webp(&opaque), "image/webp", spec(32, 32, Scale));
        assert_eq!(webp_out.content_type, "image/jpeg");
        let mut transparent = opaque;
        for (x, y) in (0..16).flat_map(|x| (0..16).map(move |y| (x, y))) {
            transparent.put_pixel(x, y, Rgba([0, 0, 0, 0]));
        }
        let webp_out = generate_ok(&webp(&transparent), "image/webp", spec(32, 32, Scale));
        assert_eq!(webp_out.content_type, "image/png");
        assert!(decode(&webp_out).get_pixel(2, 2).0[3] < 50, "transparency kept");

        // Content type parameters and case do not matter.
        generate_ok(&jpeg(&rgb), "IMAGE/JPEG; charset=binary", spec(32, 32, Scale));
    }

    #[test]
    fn unsupported_types_are_refused_distinctly() {
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
        let pdf = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n";
        let tiff = b"II\x2a\x00\x08\x00\x00\x00";
        let photo_png = png(&DynamicImage::ImageRgb8(photo(8, 8)));
        let cases: [(&[u8], &str); 5] = [
            (svg, "image/svg+xml"),
            (pdf, "application/pdf"),
            (pdf, "image/png"),   // declared an image, is not one
            (tiff, "image/jpeg"), // an image, not one decoded here
            (&photo_png, "application/octet-stream"),
        ];
        for (bytes, content_type) in cases {
            let error = generate(bytes, content_type, spec(32, 32, Crop), false, DEFAULT_MAX_IMAGE_PIXELS)
                .unwrap_err();
            assert!(matches!(error, ThumbnailError::Unsupported(_)), "{content_type}: {error:?}");
            let error = pregenerate(
                bytes,
                content_type,
                &MediaConfig::default().thumbnail_sizes,
                DEFAULT_MAX_IMAGE_PIXELS,
            )
            .unwrap_err();
            assert!(matches!(error, ThumbnailError::Unsupported(_)), "{content_type}: {error:?}");
        }
        assert!(matches!(probe(svg), Err(ThumbnailError::Unsupported(_))));
        assert!(is_supported_content_type("image/webp"));
        assert!(!is_supported_content_type("image/svg+xml"));
    }

    #[test]
    fn a_decompression_bomb_header_is_refused_before_decoding() {
        let bomb = png_header_claiming(100_000, 100_000);
        let started = Instant::now();
        let info = probe(&bomb).unwrap();
        assert_eq!((info.format, info.width, info.height), (ImageFormat::Png, 100_000, 100_000));
        let error =
            generate(&bomb, "image/png", spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS).unwrap_err();
        assert!(
            matches!(error, ThumbnailError::TooLarge { width: 100_000, height: 100_000, .. }),
            "{error:?}"
        );
        let error = pregenerate(
            &bomb,
            "image/png",
            &MediaConfig::default().thumbnail_sizes,
            DEFAULT_MAX_IMAGE_PIXELS,
        )
        .unwrap_err();
        assert!(matches!(error, ThumbnailError::TooLarge { .. }), "{error:?}");
        // Decoding 10^10 pixels would take minutes (or fail to allocate 30 GB); reading a
        // header takes microseconds. The bound is loose for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

        // The limit is the configured one, in pixels: one over is refused, at it is fine.
        let source = png(&DynamicImage::ImageRgb8(photo(100, 100)));
        let error = generate(&source, "image/png", spec(32, 32, Crop), false, 9_999).unwrap_err();
        assert!(matches!(error, ThumbnailError::TooLarge { max_pixels: 9_999, .. }), "{error:?}");
        generate(&source, "image/png", spec(32, 32, Crop), false, 10_000).unwrap();
    }

    #[test]
    fn truncated_or_corrupt_images_are_errors_not_panics() {
        let source_png = png(&DynamicImage::ImageRgb8(photo(200, 150)));
        let source_jpeg = jpeg(&photo(200, 150));
        let source_gif = gif(&[RED, GREEN], 40);
        let source_webp = webp(&DynamicImage::ImageRgb8(photo(64, 48)).into_rgba8());

        // Cut inside the pixel data: a PNG must fail (its checksums and lengths tell).
        let truncated = &source_png[..source_png.len() / 2];
        let error = generate(truncated, "image/png", spec(32, 32, Scale), false, DEFAULT_MAX_IMAGE_PIXELS)
            .unwrap_err();
        assert!(matches!(error, ThumbnailError::Decode(_)), "{error:?}");
        // Cut inside the header: every format fails to probe and to generate.
        for (bytes, content_type) in [
            (&source_png, "image/png"),
            (&source_jpeg, "image/jpeg"),
            (&source_gif, "image/gif"),
            (&source_webp, "image/webp"),
        ] {
            let cut = &bytes[..20];
            assert!(probe(cut).is_err(), "{content_type}");
            let error =
                generate(cut, content_type, spec(32, 32, Scale), true, DEFAULT_MAX_IMAGE_PIXELS).unwrap_err();
            assert!(matches!(error, ThumbnailError::Decode(_)), "{content_type}: {error:?}");
            // Any cut and any flipped byte: an answer, never a panic.
            for len in (0..bytes.len()).step_by(97) {
                let _ =
                    generate(&bytes[..len], content_type, spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS);
            }
            for position in (0..bytes.len()).step_by(53) {
                let mut corrupt = bytes.clone();
                corrupt[position] ^= 0xA5;
                let _ = generate(&corrupt, content_type, spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS);
                let _ = pregenerate(
                    &corrupt,
                    content_type,
                    &MediaConfig::default().thumbnail_sizes,
                    DEFAULT_MAX_IMAGE_PIXELS,
                );
            }
        }
        assert!(matches!(
            generate(&source_png, "image/png", spec(0, 32, Scale), false, DEFAULT_MAX_IMAGE_PIXELS),
            Err(ThumbnailError::InvalidSize)
        ));
    }

    #[test]
    fn exif_orientation_is_applied_and_no_metadata_is_kept() {
        // Red left half, blue right half; orientation 6 (rotate 90° clockwise) puts the
        // left half on top.
        let halves = RgbImage::from_fn(64, 32, |x, _| if x < 32 { RED } else { BLUE });
        let source = with_exif_orientation(&jpeg(&halves), 6);
        let info = probe(&source).unwrap();
        assert_eq!((info.width, info.height), (32, 64), "probe reports the size as displayed");

        let thumbnail = generate_ok(&source, "image/jpeg", spec(100, 100, Scale));
        assert_eq!((thumbnail.width, thumbnail.height), (32, 64));
        let decoded = decode(&thumbnail);
        assert_close(*decoded.get_pixel(16, 8), RED);
        assert_close(*decoded.get_pixel(16, 56), BLUE);

        // Same through the DCT-scaled decoder (a large source, a small thumbnail).
        let halves = RgbImage::from_fn(1600, 800, |x, _| if x < 800 { RED } else { BLUE });
        let source = with_exif_orientation(&jpeg(&halves), 6);
        let thumbnail = generate_ok(&source, "image/jpeg", spec(100, 100, Scale));
        assert_eq!((thumbnail.width, thumbnail.height), (50, 100));
        let decoded = decode(&thumbnail);
        assert_close(*decoded.get_pixel(25, 10), RED);
        assert_close(*decoded.get_pixel(25, 90), BLUE);

        // Orientation 3 (180°) swaps left and right.
        let source = with_exif_orientation(&jpeg(&bands(90, 30)), 3);
        let decoded = decode(&generate_ok(&source, "image/jpeg", spec(90, 30, Scale)));
        assert_close(*decoded.get_pixel(5, 15), BLUE);
        assert_close(*decoded.get_pixel(85, 15), RED);

        // The source carried EXIF with GPS; no thumbnail does.
        assert!(source.windows(6).any(|w| w == b"Exif\0\0"));
        let thumbnails = pregenerate(
            &source,
            "image/jpeg",
            &MediaConfig::default().thumbnail_sizes,
            DEFAULT_MAX_IMAGE_PIXELS,
        )
        .unwrap();
        assert!(!thumbnails.is_empty());
        for thumbnail in thumbnails {
            assert!(!thumbnail.bytes.windows(4).any(|w| w == b"Exif"), "{thumbnail:?}");
            assert!(!thumbnail.bytes.windows(2).any(|w| w == [0xFF, 0xE1]), "no APP1 segment");
            let mut decoder = JpegDecoder::new(Cursor::new(&thumbnail.bytes)).unwrap();
            assert_eq!(decoder.exif_metadata().unwrap(), None);
            assert_eq!(decoder.icc_profile().unwrap(), None);
        }
    }

    #[test]
    fn dct_scaled_jpeg_decoding_matches_the_full_decode() {
        let source = jpeg(&bands(2400, 1800));
        for (box_size, method) in
            [((320, 240), Scale), ((96, 96), Crop), ((800, 600), Scale), ((2000, 2000), Crop)]
        {
            let thumbnail = generate_ok(&source, "image/jpeg", spec(box_size.0, box_size.1, method));
            let expected = thumbnail_size(2400, 1800, spec(box_size.0, box_size.1, method));
            assert_eq!((thumbnail.width, thumbnail.height), expected);
            let decoded = decode(&thumbnail);
            let (w, h) = decoded.dimensions();
            if method == Scale {
                assert_close(*decoded.get_pixel(w / 6, h / 2), RED);
                assert_close(*decoded.get_pixel(w - 1 - w / 6, h / 2), BLUE);
            }
            assert_close(*decoded.get_pixel(w / 2, h / 2), GREEN);
        }
    }

    #[test]
    fn animated_gif_stays_animated_only_when_asked() {
        let source = gif(&[RED, GREEN, BLUE], 60);
        assert!(probe(&source).unwrap().animated);

        let animated =
            generate(&source, "image/gif", spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        assert!(animated.animated);
        assert_eq!(animated.content_type, "image/gif");
        assert_eq!((animated.width, animated.height), (32, 32));
        let frames =
            GifDecoder::new(Cursor::new(&animated.bytes)).unwrap().into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 3);
        for (frame, colour) in frames.iter().zip([RED, GREEN, BLUE]) {
            assert_eq!(frame.buffer().dimensions(), (32, 32));
            assert_close(*frame.buffer().get_pixel(16, 16), colour);
            assert_eq!(frame.delay().numer_denom_ms(), (100, 1));
        }

        let still =
            generate(&source, "image/gif", spec(32, 32, Crop), false, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        assert!(!still.animated);
        assert_eq!(still.content_type, "image/png");
        assert_close(*decode(&still).get_pixel(16, 16), RED);

        // One frame is not an animation, whatever is asked.
        let single = gif(&[RED], 60);
        assert!(!probe(&single).unwrap().animated);
        let thumbnail =
            generate(&single, "image/gif", spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        assert_eq!((thumbnail.content_type, thumbnail.animated), ("image/png", false));
        // Nor is a JPEG.
        let thumbnail =
            generate(&jpeg(&photo(64, 64)), "image/jpeg", spec(32, 32, Crop), true, DEFAULT_MAX_IMAGE_PIXELS)
                .unwrap();
        assert_eq!((thumbnail.content_type, thumbnail.animated), ("image/jpeg", false));
    }

    #[test]
    fn a_long_animation_is_cut_at_the_frame_cap() {
        let colours: Vec<Rgb<u8>> =
            (0..MAX_ANIMATED_FRAMES + 20).map(|i| Rgb([(i % 256) as u8, 0, 0])).collect();
        let source = gif(&colours, 4);
        let animated =
            generate(&source, "image/gif", spec(4, 4, Scale), true, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        assert!(animated.animated);
        let frames =
            GifDecoder::new(Cursor::new(&animated.bytes)).unwrap().into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), MAX_ANIMATED_FRAMES);
    }

    #[test]
    fn pregenerate_makes_each_size_once_and_skips_larger_than_the_source() {
        let defaults = MediaConfig::default().thumbnail_sizes;
        // A large photo: every default size, JPEG.
        let thumbnails =
            pregenerate(&jpeg(&photo(1000, 750)), "image/jpeg", &defaults, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        let sizes: Vec<_> =
            thumbnails.iter().map(|t| (t.width, t.height, t.method, t.content_type)).collect();
        assert_eq!(
            sizes,
            [
                (32, 32, Crop, "image/jpeg"),
                (96, 96, Crop, "image/jpeg"),
                (320, 240, Scale, "image/jpeg"),
                (640, 480, Scale, "image/jpeg"),
                (800, 600, Scale, "image/jpeg"),
            ]
        );
        for thumbnail in &thumbnails {
            assert_eq!(decode(thumbnail).dimensions(), (thumbnail.width, thumbnail.height));
        }
        // A small PNG: the scales larger than it collapse into one of its own size, the crop
        // larger than it into a square of its height.
        let thumbnails = pregenerate(
            &png(&DynamicImage::ImageRgb8(photo(100, 80))),
            "image/png",
            &defaults,
            DEFAULT_MAX_IMAGE_PIXELS,
        )
        .unwrap();
        let sizes: Vec<_> =
            thumbnails.iter().map(|t| (t.width, t.height, t.method, t.content_type)).collect();
        assert_eq!(
            sizes,
            [(32, 32, Crop, "image/png"), (80, 80, Crop, "image/png"), (100, 80, Scale, "image/png")]
        );
        // An animated GIF: each size still and animated.
        let thumbnails =
            pregenerate(&gif(&[RED, BLUE], 200), "image/gif", &defaults, DEFAULT_MAX_IMAGE_PIXELS).unwrap();
        let sizes: Vec<_> =
            thumbnails.iter().map(|t| (t.width, t.height, t.content_type, t.animated)).collect();
        assert_eq!(
            sizes,
            [
                (32, 32, "image/png", false),
                (32, 32, "image/gif", true),
                (96, 96, "image/png", false),
                (96, 96, "image/gif", true),
                (200, 200, "image/png", false),
                (200, 200, "image/gif", true),
            ]
        );
    }

    #[test]
    fn selection_matches_synapse_for_its_default_sizes() {
        // The stored default thumbnails of a 4:3 landscape and a 3:4 portrait image.
        const LANDSCAPE: [(u32, u32, ThumbnailMethod); 5] =
            [(32, 32, Crop), (96, 96, Crop), (320, 240, Scale), (640, 480, Scale), (800, 600, Scale)];
        const PORTRAIT: [(u32, u32, ThumbnailMethod); 5] =
            [(32, 32, Crop), (96, 96, Crop), (180, 240, Scale), (360, 480, Scale), (450, 600, Scale)];
        // Synapse 1.163's `_select_thumbnail` on these, run once to write this table.
        // (stored thumbnails, requested width, height and method, chosen width and height)
        type Case = (&'static Stored, u32, u32, ThumbnailMethod, (u32, u32));
        type Stored = [(u32, u32, ThumbnailMethod); 5];
        let cases: &[Case] = &[
            // LANDSCAPE
            (&LANDSCAPE, 1, 1, Crop, (32, 32)),
            (&LANDSCAPE, 16, 16, Crop, (32, 32)),
            (&LANDSCAPE, 32, 32, Crop, (32, 32)),
            (&LANDSCAPE, 33, 33, Crop, (96, 96)),
            (&LANDSCAPE, 40, 20, Crop, (32, 32)),
            (&LANDSCAPE, 64, 64, Crop, (96, 96)),
            (&LANDSCAPE, 96, 96, Crop, (96, 96)),
            (&LANDSCAPE, 97, 97, Crop, (96, 96)),
            (&LANDSCAPE, 100, 50, Crop, (96, 96)),
            (&LANDSCAPE, 200, 200, Crop, (96, 96)),
            (&LANDSCAPE, 320, 240, Crop, (32, 32)),
            (&LANDSCAPE, 321, 241, Crop, (32, 32)),
            (&LANDSCAPE, 640, 480, Crop, (32, 32)),
            (&LANDSCAPE, 800, 600, Crop, (32, 32)),
            (&LANDSCAPE, 1000, 1000, Crop, (96, 96)),
            (&LANDSCAPE, 10, 500, Crop, (32, 32)),
            (&LANDSCAPE, 500, 10, Crop, (32, 32)),
            (&LANDSCAPE, 1, 1, Scale, (320, 240)),
            (&LANDSCAPE, 16, 16, Scale, (320, 240)),
            (&LANDSCAPE, 32, 32, Scale, (320, 240)),
            (&LANDSCAPE, 33, 33, Scale, (320, 240)),
            (&LANDSCAPE, 40, 20, Scale, (320, 240)),
            (&LANDSCAPE, 64, 64, Scale, (320, 240)),
            (&LANDSCAPE, 96, 96, Scale, (320, 240)),
            (&LANDSCAPE, 97, 97, Scale, (320, 240)),
            (&LANDSCAPE, 100, 50, Scale, (320, 240)),
            (&LANDSCAPE, 200, 200, Scale, (320, 240)),
            (&LANDSCAPE, 320, 240, Scale, (320, 240)),
            (&LANDSCAPE, 321, 241, Scale, (640, 480)),
            (&LANDSCAPE, 640, 480, Scale, (640, 480)),
            (&LANDSCAPE, 800, 600, Scale, (800, 600)),
            (&LANDSCAPE, 1000, 1000, Scale, (800, 600)),
            (&LANDSCAPE, 10, 500, Scale, (640, 480)),
            (&LANDSCAPE, 500, 10, Scale, (320, 240)),
            // PORTRAIT
            (&PORTRAIT, 1, 1, Crop, (32, 32)),
            (&PORTRAIT, 16, 16, Crop, (32, 32)),
            (&PORTRAIT, 32, 32, Crop, (32, 32)),
            (&PORTRAIT, 33, 33, Crop, (96, 96)),
            (&PORTRAIT, 40, 20, Crop, (32, 32)),
            (&PORTRAIT, 64, 64, Crop, (96, 96)),
            (&PORTRAIT, 96, 96, Crop, (96, 96)),
            (&PORTRAIT, 97, 97, Crop, (96, 96)),
            (&PORTRAIT, 100, 50, Crop, (96, 96)),
            (&PORTRAIT, 200, 200, Crop, (96, 96)),
            (&PORTRAIT, 320, 240, Crop, (32, 32)),
            (&PORTRAIT, 321, 241, Crop, (32, 32)),
            (&PORTRAIT, 640, 480, Crop, (32, 32)),
            (&PORTRAIT, 800, 600, Crop, (32, 32)),
            (&PORTRAIT, 1000, 1000, Crop, (96, 96)),
            (&PORTRAIT, 10, 500, Crop, (32, 32)),
            (&PORTRAIT, 500, 10, Crop, (32, 32)),
            (&PORTRAIT, 1, 1, Scale, (180, 240)),
            (&PORTRAIT, 16, 16, Scale, (180, 240)),
            (&PORTRAIT, 32, 32, Scale, (180, 240)),
            (&PORTRAIT, 33, 33, Scale, (180, 240)),
            (&PORTRAIT, 40, 20, Scale, (180, 240)),
            (&PORTRAIT, 64, 64, Scale, (180, 240)),
            (&PORTRAIT, 96, 96, Scale, (180, 240)),
            (&PORTRAIT, 97, 97, Scale, (180, 240)),
            (&PORTRAIT, 100, 50, Scale, (180, 240)),
            (&PORTRAIT, 200, 200, Scale, (180, 240)),
            (&PORTRAIT, 320, 240, Scale, (180, 240)),
            (&PORTRAIT, 321, 241, Scale, (360, 480)),
            (&PORTRAIT, 640, 480, Scale, (360, 480)),
            (&PORTRAIT, 800, 600, Scale, (450, 600)),
            (&PORTRAIT, 1000, 1000, Scale, (450, 600)),
            (&PORTRAIT, 10, 500, Scale, (360, 480)),
            (&PORTRAIT, 500, 10, Scale, (450, 600)),
        ];
        for &(stored, width, height, method, expected) in cases {
            let stored: Vec<StoredThumbnail> = stored.iter().map(|&(w, h, m)| candidate(w, h, m)).collect();
            let chosen = stored[select_thumbnail(&stored, width, height, method).unwrap()].size;
            assert_eq!(
                (chosen.width, chosen.height, chosen.method),
                (expected.0, expected.1, method),
                "{width}x{height} {method}"
            );
        }
        // Nothing of the method asked: no thumbnail (Synapse's 404).
        let scales = [candidate(320, 240, Scale)];
        assert_eq!(select_thumbnail(&scales, 32, 32, Crop), None);
        assert_eq!(select_thumbnail(&[], 32, 32, Scale), None);
        // Ties go to the earlier thumbnail.
        let twins = [candidate(100, 50, Scale), candidate(50, 100, Scale)];
        assert_eq!(select_thumbnail(&twins, 75, 75, Scale), Some(0));
        // Of one size, the preferred type (an animated one when animation is asked), then the
        // shorter.
        let still = candidate(96, 96, Crop);
        let animated = StoredThumbnail { preferred_type: false, length: 10, ..still };
        let shorter = StoredThumbnail { length: 50, ..still };
        assert_eq!(select_thumbnail(&[animated, still], 96, 96, Crop), Some(1));
        assert_eq!(select_thumbnail(&[still, shorter], 96, 96, Crop), Some(1));
        assert_eq!("CROP".parse(), Ok(Crop));
        assert_eq!("zoom".parse::<ThumbnailMethod>(), Err(myelin_config::UnknownThumbnailMethod));
    }

    /// Prints the time of a 4000x3000 JPEG to 320x240 and 800x600 thumbnails. Run with
    /// `cargo nextest run -p myelin-service --release --run-ignored only -E 'test(thumbnail_timing)' --no-capture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn thumbnail_timing() {
        let source = jpeg(&photo(4000, 3000));
        std::fs::write(std::env::temp_dir().join("myelin-thumbnail-4000x3000.jpg"), &source).unwrap();
        for (width, height) in [(320, 240), (800, 600)] {
            let runs = 10;
            let started = Instant::now();
            for _ in 0..runs {
                generate(&source, "image/jpeg", spec(width, height, Scale), false, DEFAULT_MAX_IMAGE_PIXELS)
                    .unwrap();
            }
            println!(
                "4000x3000 JPEG -> {width}x{height} scale: {:?} per thumbnail",
                started.elapsed() / runs
            );
        }
        let runs = 5;
        let started = Instant::now();
        for _ in 0..runs {
            pregenerate(
                &source,
                "image/jpeg",
                &MediaConfig::default().thumbnail_sizes,
                DEFAULT_MAX_IMAGE_PIXELS,
            )
            .unwrap();
        }
        println!("4000x3000 JPEG -> Synapse's 5 default sizes: {:?}", started.elapsed() / runs);
    }
}
