//! permessage-deflate (RFC 7692). Being written.
