//! The media repository's keys: Synapse's defaults, its value shapes, and clear errors.

use std::path::Path;

use myelin_config::{LoadedConfig, MediaConfig, ThumbnailMethod, ThumbnailSize, load_from_str};

fn load(yaml: &str) -> Result<LoadedConfig, String> {
    load_from_str(&format!("server_name: example.org\n{yaml}"), Path::new("/etc/myelin/homeserver.yaml"))
        .map_err(|e| e.to_string())
}

fn size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
    ThumbnailSize { width, height, method }
}

#[test]
fn defaults_follow_synapse() {
    let media = load("").unwrap().config.media;
    assert_eq!(media, MediaConfig::default());
    assert!(media.media_store_path.is_absolute() && media.media_store_path.ends_with("media_store"));
    assert_eq!(media.max_upload_size.0, 50 * 1024 * 1024);
    assert!(media.enable_authenticated_media);
    assert_eq!(media.max_image_pixels, 32 * 1024 * 1024);
    assert!(!media.dynamic_thumbnails);
    use ThumbnailMethod::{Crop, Scale};
    assert_eq!(
        media.thumbnail_sizes,
        vec![
            size(32, 32, Crop),
            size(96, 96, Crop),
            size(320, 240, Scale),
            size(640, 480, Scale),
            size(800, 600, Scale)
        ]
    );
    assert_eq!(media.max_pending_media_uploads, 5);
    assert_eq!(media.unused_expiration_time.0, 24 * 3600 * 1000);
    assert_eq!(media.max_avatar_size, None);
    assert_eq!(media.allowed_avatar_mimetypes, None);
    assert_eq!(media.media_retention.local_media_lifetime, None);
    assert_eq!(media.media_retention.remote_media_lifetime, None);
}

#[test]
fn keys_are_read_in_synapse_shapes() {
    let loaded = load(
        "media_store_path: /srv/media\nmax_upload_size: 10M\nenable_authenticated_media: false\n\
         max_image_pixels: 1M\ndynamic_thumbnails: true\n\
         thumbnail_sizes:\n  - {width: 64, height: 48, method: scale}\n  - {width: 10, height: 10, method: crop}\n\
         max_pending_media_uploads: 2\nunused_expiration_time: 1h\nmax_avatar_size: 2M\n\
         allowed_avatar_mimetypes: [image/png, image/jpeg]\n\
         media_retention:\n  local_media_lifetime: 90d\n  remote_media_lifetime: 14d\n",
    )
    .unwrap();
    let media = loaded.config.media;
    assert_eq!(media.media_store_path, Path::new("/srv/media"));
    assert_eq!(media.max_upload_size.0, 10 * 1024 * 1024);
    assert!(!media.enable_authenticated_media);
    assert_eq!(media.max_image_pixels, 1024 * 1024);
    assert!(media.dynamic_thumbnails);
    assert_eq!(
        media.thumbnail_sizes,
        vec![size(64, 48, ThumbnailMethod::Scale), size(10, 10, ThumbnailMethod::Crop)]
    );
    assert_eq!(media.max_pending_media_uploads, 2);
    assert_eq!(media.unused_expiration_time.0, 3_600_000);
    assert_eq!(media.max_avatar_size.map(|s| s.0), Some(2 * 1024 * 1024));
    assert_eq!(media.allowed_avatar_mimetypes, Some(vec!["image/png".to_owned(), "image/jpeg".to_owned()]));
    assert_eq!(media.media_retention.local_media_lifetime.map(|d| d.0), Some(90 * 86_400_000));
    assert_eq!(media.media_retention.remote_media_lifetime.map(|d| d.0), Some(14 * 86_400_000));
    // Each media key is read, none reported as unsupported or unknown; avatars are warned about
    // until they are enforced.
    for key in
        ["media_store_path", "thumbnail_sizes", "media_retention", "max_image_pixels", "dynamic_thumbnails"]
    {
        assert!(
            !loaded.warnings.iter().any(|w| w.contains(&format!("`{key}"))),
            "{key}: {:?}",
            loaded.warnings
        );
    }
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    let error = load("thumbnail_sizes:\n  - {width: 32, height: 32, method: stretch}\n").unwrap_err();
    assert!(error.contains("thumbnail_sizes"), "{error}");
    let error = load("thumbnail_sizes:\n  - {width: 0, height: 32, method: crop}\n").unwrap_err();
    assert!(error.contains("thumbnail_sizes") && error.contains("positive"), "{error}");
    let error = load("max_pending_media_uploads: lots\n").unwrap_err();
    assert!(error.contains("max_pending_media_uploads"), "{error}");
    let error = load("media_retention:\n  local_media_lifetime: soon\n").unwrap_err();
    assert!(error.contains("media_retention.local_media_lifetime"), "{error}");
    let error = load("enable_authenticated_media: maybe\n").unwrap_err();
    assert!(error.contains("enable_authenticated_media"), "{error}");
}
