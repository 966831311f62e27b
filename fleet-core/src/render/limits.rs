//! Limits a rendered instance must fit: the provider's user data size and the hostname
//! length. Checked at plan time, so a stack that cannot boot fails before any cloud call.

use std::io::Write as _;

use super::RenderError;
use crate::cloud::UserDataLimit;
use crate::naming::MAX_NAME_LEN;

/// `user_data` compressed with gzip (what a provider with [`UserDataLimit::gzip`] sends).
pub fn gzip(user_data: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    gz.write_all(user_data.as_bytes())
        .expect("gzip into memory cannot fail");
    gz.finish().expect("gzip into memory cannot fail")
}

/// Checks that `user_data`, rendered for `instance`, fits `limit` of `provider`.
pub fn check_user_data_size(
    instance: &str,
    user_data: &str,
    limit: UserDataLimit,
    provider: &str,
) -> Result<(), RenderError> {
    let size = if limit.gzip {
        gzip(user_data).len()
    } else {
        user_data.len()
    };
    if size > limit.max_bytes {
        return Err(RenderError::UserDataTooLarge {
            instance: instance.to_string(),
            size,
            limit: limit.max_bytes,
            compressed: limit.gzip,
            provider: provider.to_string(),
        });
    }
    Ok(())
}

/// Checks that an instance name fits in a hostname (at most 63 characters).
pub fn check_hostname(name: &str) -> Result<(), RenderError> {
    if name.len() > MAX_NAME_LEN {
        return Err(RenderError::HostnameTooLong {
            name: name.to_string(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_limit_are_refused_and_name_the_instance() {
        let limit = UserDataLimit {
            max_bytes: 10,
            gzip: false,
        };
        assert!(check_user_data_size("a-0001", "short", limit, "p").is_ok());
        let e = check_user_data_size("a-0001", "much longer than ten", limit, "p").unwrap_err();
        assert!(e.to_string().contains("a-0001"), "{e}");
        assert!(e.to_string().contains("20 bytes"), "{e}");
    }

    #[test]
    fn gzip_limits_count_the_compressed_size() {
        // 20 KB of repetition compresses far below 16 KB; the raw size would not fit.
        let text = "write_files: []\n".repeat(1300);
        assert!(text.len() > 16 * 1024);
        let ec2 = UserDataLimit {
            max_bytes: 16 * 1024,
            gzip: true,
        };
        assert!(check_user_data_size("x", &text, ec2, "aws").is_ok());
        let raw = UserDataLimit { gzip: false, ..ec2 };
        assert!(check_user_data_size("x", &text, raw, "aws").is_err());
    }

    #[test]
    fn hostnames_longer_than_63_are_refused() {
        assert!(check_hostname(&"a".repeat(63)).is_ok());
        let e = check_hostname(&"a".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("64 characters"), "{e}");
    }
}
